package sqm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeline-router/lifeline/sqm/autorate"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeBackend is the kernel as the Service sees it: the rate per direction, and the calls.
type fakeBackend struct {
	mu        sync.Mutex
	shapes    map[string]Shape
	rate      map[string]uint64 // "dev/egress"
	ensures   []string
	removes   []string
	setRates  []rateCall
	ensureErr map[string]error // per device, consumed by one Ensure
	setErr    error            // consumed by one SetRate
	stats     map[string]CakeStats
}

type rateCall struct {
	at  time.Time
	key string
	bps uint64
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{shapes: map[string]Shape{}, rate: map[string]uint64{}, ensureErr: map[string]error{}, stats: map[string]CakeStats{}}
}

func key(dev string, dir Dir) string { return dev + "/" + dir.String() }

func (f *fakeBackend) Ensure(sh Shape) error {
	if err := sh.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensures = append(f.ensures, sh.Device)
	if err := f.ensureErr[sh.Device]; err != nil {
		delete(f.ensureErr, sh.Device)
		return err
	}
	f.shapes[sh.Device] = sh
	for _, dir := range []Dir{DirEgress, DirIngress} {
		d := sh.Egress
		if dir == DirIngress {
			d = sh.Ingress
		}
		k := key(sh.Device, dir)
		cur, ok := f.rate[k]
		switch {
		case d.Bandwidth == 0:
			delete(f.rate, k)
		case ok && d.MinBandwidth != 0 && cur >= d.MinBandwidth && cur <= d.MaxBandwidth:
			// as Shaper.Ensure: the autorate controller owns a rate within bounds
		default:
			f.rate[k] = d.Bandwidth
		}
	}
	return nil
}

func (f *fakeBackend) SetRate(dev string, dir Dir, bps uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.setErr; err != nil {
		f.setErr = nil
		return err
	}
	k := key(dev, dir)
	if _, ok := f.rate[k]; !ok {
		return fmt.Errorf("SetRate(%s): no cake", k)
	}
	sh := f.shapes[dev]
	d := sh.Egress
	if dir == DirIngress {
		d = sh.Ingress
	}
	if bps < d.MinBandwidth || bps > d.MaxBandwidth {
		return fmt.Errorf("SetRate(%s, %d): outside bounds", k, bps)
	}
	f.rate[k] = bps
	f.setRates = append(f.setRates, rateCall{time.Now(), k, bps})
	return nil
}

func (f *fakeBackend) Stats(dev string, dir Dir) (CakeStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.stats[key(dev, dir)]
	if !ok {
		return CakeStats{}, errors.New("Stats: no sch_cake in this kernel")
	}
	return st, nil
}

func (f *fakeBackend) Remove(dev string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removes = append(f.removes, dev)
	delete(f.shapes, dev)
	delete(f.rate, key(dev, DirEgress))
	delete(f.rate, key(dev, DirIngress))
	return nil
}

func (f *fakeBackend) rateOf(k string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rate[k]
}

func (f *fakeBackend) calls(k string) []rateCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []rateCall
	for _, c := range f.setRates {
		if c.key == k {
			out = append(out, c)
		}
	}
	return out
}

// world is the uplink's egress behind our shaper: a saturating sender (while loaded), a modem
// FIFO of 2 MiB drained at the capacity, and one in-tunnel probe per advance that waits behind
// the FIFO's content and whose result comes back 20 ms after it leaves. It is the Counters and
// the DelaySource of the Service under test; time is the synctest bubble's.
type world struct {
	mu      sync.Mutex
	be      *fakeBackend
	dev     string
	capa    func(t time.Time) float64
	loaded  func(t time.Time) bool
	q       float64 // bits queued
	bytes   float64
	samples []autorate.DelaySample // ReceivedAt may lie in the future: not yet arrived
	afters  []time.Time            // the cursors the Service passed
	handed  map[int]int            // sample index → times returned
	maxQ    func(t time.Time, q time.Duration)
}

func (w *world) advance(now time.Time, dt time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.capa(now)
	in := 64e3 * dt.Seconds()
	if w.loaded(now) {
		in = float64(w.be.rateOf(key(w.dev, DirEgress))) * dt.Seconds()
	}
	w.q += in
	w.q -= min(w.q, c*dt.Seconds())
	if buf := float64(2<<20) * 8; w.q > buf {
		in -= w.q - buf
		w.q = buf
	}
	w.bytes += in / 8
	qd := time.Duration(w.q / c * float64(time.Second))
	if w.maxQ != nil {
		w.maxQ(now, qd)
	}
	owd := 20*time.Millisecond + qd
	w.samples = append(w.samples, autorate.DelaySample{SentAt: now, Delay: owd, ReceivedAt: now.Add(owd + 20*time.Millisecond)})
}

func (w *world) Bytes(dev string, dir Dir) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if dev != w.dev {
		return 0, fmt.Errorf("ReadFile(/sys/class/net/%s/statistics): no such device", dev)
	}
	if dir == DirIngress {
		return 0, nil
	}
	return uint64(w.bytes), nil
}

func (w *world) DelaySamples(uplink string, dir Dir, after time.Time) []autorate.DelaySample {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	w.afters = append(w.afters, after)
	var out []autorate.DelaySample
	if w.handed == nil {
		w.handed = map[int]int{}
	}
	for i, s := range w.samples {
		if s.ReceivedAt.After(after) && !s.ReceivedAt.After(now) {
			out = append(out, s)
			w.handed[i]++
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ReceivedAt.Before(out[j].ReceivedAt) })
	return out
}

func (w *world) OldestPending(string) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for _, s := range w.samples {
		if s.ReceivedAt.After(now) {
			return now.Sub(s.SentAt)
		}
	}
	return 0
}

func lteConfig(controller string) UplinkConfig {
	return UplinkConfig{
		Egress: &DirectionConfig{Bandwidth: 20e6, Diffserv: "diffserv4", AckFilter: true,
			Autorate: &AutorateConfig{Enabled: true, Min: 2e6, Max: 80e6, Controller: controller}},
		Ingress: &DirectionConfig{Bandwidth: 50e6},
	}
}

const tick = 50 * time.Millisecond

// runLoop starts s.Run in the bubble and returns a function that lets virtual time pass in
// steps of one tick, advancing the world half a tick before each loop tick so the order is fixed.
func runLoop(t *testing.T, s *Service, w *world) (step func(n int), stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(tick / 2)
	step = func(n int) {
		for range n {
			if w != nil {
				w.advance(time.Now(), tick)
			}
			time.Sleep(tick)
			synctest.Wait()
		}
	}
	stop = func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v, want context.Canceled", err)
		}
	}
	return step, stop
}

func TestServiceFollowsCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := newFakeBackend()
		start := time.Now()
		dropAt := start.Add(10 * time.Second)
		w := &world{be: be, dev: "wwan0",
			capa: func(t time.Time) float64 {
				if t.Before(dropAt) {
					return 80e6
				}
				return 10e6
			},
			loaded: func(time.Time) bool { return true },
		}
		var recovered time.Time // last instant after the drop with ≥ 30 ms of queue
		w.maxQ = func(now time.Time, q time.Duration) {
			if !now.Before(dropAt) && q >= 30*time.Millisecond {
				recovered = now
			}
		}
		s, err := NewService(ServiceOptions{Backend: be, Delays: w, Counters: w})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Apply([]Uplink{{Name: "lte", Device: "wwan0", Config: lteConfig("")}}); err != nil {
			t.Fatal(err)
		}
		want, _ := lteConfig("").Shape("wwan0")
		if be.shapes["wwan0"] != want || len(be.ensures) != 1 {
			t.Fatalf("after Apply: ensures %v, shape %+v; want one Ensure of %+v", be.ensures, be.shapes["wwan0"], want)
		}
		step, stop := runLoop(t, s, w)
		defer stop()

		step(int(10 * time.Second / tick))
		if r := be.rateOf("wwan0/egress"); r < 70e6 {
			t.Errorf("after 10 s saturating an 80 Mbit/s link: rate %d, want ≥ 70e6", r)
		}
		step(int(1500 * time.Millisecond / tick))
		if r := be.rateOf("wwan0/egress"); r > 12e6 {
			t.Errorf("1.5 s after 80→10 Mbit/s: rate %d, want ≤ 12e6", r)
		}
		step(int(8500 * time.Millisecond / tick))
		if d := recovered.Sub(dropAt); d > 2*time.Second {
			t.Errorf("queue ≥ 30 ms until %v after the drop, want < 2 s", d)
		}
		if r := be.rateOf("wwan0/egress"); r < 8e6 || r > 11e6 {
			t.Errorf("settled at %d on a 10 Mbit/s link, want 8e6..11e6", r)
		}

		calls := be.calls("wwan0/egress")
		ticks := int(20 * time.Second / tick)
		if len(calls) == 0 || len(calls) > ticks/2 {
			t.Errorf("%d SetRate calls in %d ticks", len(calls), ticks)
		}
		prev := uint64(20e6)
		for i, c := range calls {
			if i == 0 && c.bps == prev {
				continue // after Ensure the kernel's rate is not known: set once
			}
			rel := float64(max(c.bps, prev)-min(c.bps, prev)) / float64(prev)
			if rel < 0.01 && c.bps != 2e6 && c.bps != 80e6 {
				t.Errorf("SetRate %d after %d at %v: change of %.2f%% not worth a tc call", c.bps, prev, c.at.Sub(start), rel*100)
			}
			prev = c.bps
		}
		if n := len(be.calls("wwan0/ingress")); n != 0 {
			t.Errorf("%d SetRate calls on the fixed-rate ingress", n)
		}
		// Every probe result that arrived was handed to the controller exactly once: the
		// cursor is the ReceivedAt of the last sample handed over.
		w.mu.Lock()
		for i, a := range w.afters[1:] {
			if a.Before(w.afters[i]) {
				t.Errorf("cursor went back from %v to %v", w.afters[i], a)
			}
		}
		end := time.Now()
		for i, sm := range w.samples {
			if n := w.handed[i]; !sm.ReceivedAt.After(end.Add(-tick)) && n != 1 {
				t.Errorf("sample %d (received %v) handed over %d times", i, sm.ReceivedAt.Sub(start), n)
			}
		}
		w.mu.Unlock()

		st := s.Status()
		if len(st) != 2 || st[0].Direction != "egress" || st[0].Controller != "lifeline" || st[0].RateBps != be.rateOf("wwan0/egress") ||
			st[0].AchievedBps < 8e6 || st[0].RateChanges != uint64(len(calls)) || st[1].Controller != "fixed" || st[1].RateBps != 50e6 {
			t.Errorf("Status = %+v", st)
		}
	})
}

func TestServiceNoRateChangeAtIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := newFakeBackend()
		start := time.Now()
		idleFrom, idleTo := start.Add(4*time.Second), start.Add(40*time.Second)
		w := &world{be: be, dev: "wwan0",
			capa:   func(time.Time) float64 { return 60e6 },
			loaded: func(t time.Time) bool { return t.Before(idleFrom) || !t.Before(idleTo) },
		}
		// cake-autorate drifts back to its base rate at idle: the Service must not follow it.
		s, _ := NewService(ServiceOptions{Backend: be, Delays: w, Counters: w})
		if err := s.Apply([]Uplink{{Name: "lte", Device: "wwan0", Config: lteConfig(ControllerCakeAutorate)}}); err != nil {
			t.Fatal(err)
		}
		step, stop := runLoop(t, s, w)
		defer stop()
		step(int(40 * time.Second / tick))
		loadedRate := be.calls("wwan0/egress")
		if len(loadedRate) == 0 {
			t.Fatal("no rate change under load")
		}
		var atIdle []rateCall
		for _, c := range loadedRate {
			// the achieved rate is averaged over a second: allow that second after the load stops
			if c.at.After(idleFrom.Add(1100 * time.Millisecond)) {
				atIdle = append(atIdle, c)
			}
		}
		if len(atIdle) != 0 {
			t.Errorf("%d rate changes at idle, first %+v", len(atIdle), atIdle[0])
		}
		st := s.Status()[0]
		if st.TargetBps == st.RateBps {
			t.Fatalf("controller did not drift at idle (target %d = rate %d): the test proves nothing", st.TargetBps, st.RateBps)
		}
		// Load again: the controller's rate is applied within a few ticks.
		n := len(loadedRate)
		step(10)
		if len(be.calls("wwan0/egress")) == n {
			t.Errorf("no rate change within 10 ticks of load resuming")
		}
	})
}

func TestServiceRetriesSetup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := newFakeBackend()
		w := &world{be: be, dev: "wwan0", capa: func(time.Time) float64 { return 20e6 }, loaded: func(time.Time) bool { return true }}
		var logs []string
		var logMu sync.Mutex
		s, _ := NewService(ServiceOptions{Backend: be, Delays: w, Counters: w, Logf: func(f string, a ...any) {
			logMu.Lock()
			logs = append(logs, fmt.Sprintf(f, a...))
			logMu.Unlock()
		}})
		be.ensureErr["wwan0"] = errors.New(`LinkByName("wwan0"): Link not found`)
		err := s.Apply([]Uplink{{Name: "lte", Device: "wwan0", Config: lteConfig("")}})
		if err == nil || !strings.Contains(err.Error(), `uplink "lte"`) || !strings.Contains(err.Error(), "Link not found") {
			t.Fatalf("Apply = %v, want the uplink and the cause named", err)
		}
		if st := s.Status(); st[0].State != "setup-failed" || !strings.Contains(st[0].Error, "Link not found") {
			t.Errorf("status after failed set-up: %+v", st[0])
		}
		step, stop := runLoop(t, s, w)
		defer stop()
		step(int(time.Second/tick) + 1)
		if len(be.ensures) != 2 || be.rateOf("wwan0/egress") == 0 {
			t.Fatalf("ensures %v, rate %d: want a second Ensure after EnsureRetry", be.ensures, be.rateOf("wwan0/egress"))
		}
		if st := s.Status(); st[0].State == "setup-failed" {
			t.Errorf("still failed: %+v", st[0])
		}
		// The qdisc vanishes under us (modem re-enumerated): SetRate fails, set up again.
		step(20)
		be.mu.Lock()
		be.setErr = errors.New("SetRate(wwan0 egress): no cake root qdisc on wwan0")
		be.mu.Unlock()
		step(int(time.Second/tick) + 5)
		if len(be.ensures) != 3 {
			t.Errorf("ensures %v after a failed SetRate, want 3", be.ensures)
		}
		logMu.Lock()
		if len(logs) < 2 || !strings.Contains(logs[0], "retrying") {
			t.Errorf("logs: %q", logs)
		}
		logMu.Unlock()
	})
}

func TestServiceApplyReconciles(t *testing.T) {
	be := newFakeBackend()
	w := &world{be: be, dev: "wwan0"}
	s, _ := NewService(ServiceOptions{Backend: be, Delays: w, Counters: w})
	fiber := UplinkConfig{Egress: &DirectionConfig{Bandwidth: 900e6}, Ingress: &DirectionConfig{Bandwidth: 900e6}}
	lte := lteConfig("")
	if err := s.Apply([]Uplink{{"fiber", "eth1", fiber}, {"lte", "wwan0", lte}}); err != nil {
		t.Fatal(err)
	}
	if len(s.Status()) != 4 {
		t.Fatalf("status: %+v", s.Status())
	}
	// Bad entries are rejected before anything changes, naming the uplink and the field.
	bad := lteConfig("")
	bad.Ingress = &DirectionConfig{Bandwidth: 1e6, Diffserv: "diffserv5"}
	for _, tc := range []struct {
		ups  []Uplink
		want string
	}{
		{[]Uplink{{"lte", "wwan0", bad}}, `uplink "lte": ingress.diffserv: "diffserv5" unknown`},
		{[]Uplink{{"lte", "wwan0", lte}, {"lte", "wwan1", lte}}, `"lte" listed twice`},
		{[]Uplink{{"a", "wwan0", lte}, {"b", "wwan0", lte}}, `share device "wwan0"`},
		{[]Uplink{{"", "wwan0", lte}}, "empty name"},
	} {
		if err := s.Apply(tc.ups); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Apply(%v) = %v, want %q", tc.ups, err, tc.want)
		}
	}
	if len(be.removes) != 0 || len(be.ensures) != 2 {
		t.Fatalf("a rejected Apply touched the kernel: removes %v ensures %v", be.removes, be.ensures)
	}
	// Same config again: controllers kept.
	before := s.uplinks["lte"].dirs[0]
	if err := s.Apply([]Uplink{{"fiber", "eth1", fiber}, {"lte", "wwan0", lteConfig("")}}); err != nil {
		t.Fatal(err)
	}
	if s.uplinks["lte"].dirs[0] != before {
		t.Error("unchanged config restarted the controller")
	}
	// Fiber dropped from the config, LTE moved to another device.
	if err := s.Apply([]Uplink{{"lte", "wwan1", lte}}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(be.removes, ",") != "eth1,wwan0" {
		t.Errorf("removes %v, want eth1 then wwan0", be.removes)
	}
	if st := s.Status(); len(st) != 2 || st[0].Device != "wwan1" {
		t.Errorf("status %+v", st)
	}
	if err := s.Remove("lte"); err != nil || be.removes[len(be.removes)-1] != "wwan1" || len(s.Status()) != 0 {
		t.Errorf("Remove: %v, removes %v, status %+v", err, be.removes, s.Status())
	}
	if err := s.Remove("lte"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := s.Apply([]Uplink{{"fiber", "eth1", fiber}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil || be.removes[len(be.removes)-1] != "eth1" {
		t.Errorf("Close: %v, removes %v", err, be.removes)
	}
}

func TestServiceMetrics(t *testing.T) {
	be := newFakeBackend()
	w := &world{be: be, dev: "wwan0"}
	s, _ := NewService(ServiceOptions{Backend: be, Delays: w, Counters: w})
	if err := s.Apply([]Uplink{{"lte", "wwan0", lteConfig("")}}); err != nil {
		t.Fatal(err)
	}
	be.stats["wwan0/egress"] = CakeStats{Tins: []TinStats{
		{BacklogBytes: 1000, DroppedPackets: 3, ECNMarkedPackets: 1, AvgDelay: 2 * time.Millisecond},
		{BacklogBytes: 500, DroppedPackets: 4, ECNMarkedPackets: 2, AvgDelay: 5 * time.Millisecond},
		{}, {AvgDelay: 100 * time.Microsecond},
	}}
	// ingress: no stats (e.g. no sch_cake): only its rate is exported.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(s); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	for k, v := range map[string]float64{
		"sqm_rate_bps{direction=egress,uplink=lte}":                      20e6,
		"sqm_rate_bps{direction=ingress,uplink=lte}":                     50e6,
		"sqm_backlog_bytes{direction=egress,uplink=lte}":                 1500,
		"sqm_drops_total{direction=egress,uplink=lte}":                   7,
		"sqm_marks_total{direction=egress,uplink=lte}":                   3,
		"sqm_delay_seconds{direction=egress,tin=best_effort,uplink=lte}": 0.005,
		"sqm_delay_seconds{direction=egress,tin=voice,uplink=lte}":       0.0001,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "sqm_backlog_bytes") && strings.Contains(k, "ingress") {
			t.Errorf("%s exported without stats", k)
		}
	}
	st := s.Status()
	if !st[0].Stats || st[0].BacklogBytes != 1500 || st[0].Drops != 7 || st[1].Stats {
		t.Errorf("Status stats: %+v", st)
	}
}

func TestSysfsCounters(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "wwan0", "statistics")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tx_bytes"), []byte("12345\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "rx_bytes"), []byte("garbage\n"), 0o644)
	c := SysfsCounters{Root: root}
	if v, err := c.Bytes("wwan0", DirEgress); err != nil || v != 12345 {
		t.Errorf("tx_bytes = %d, %v", v, err)
	}
	if _, err := c.Bytes("wwan0", DirIngress); err == nil || !strings.Contains(err.Error(), "rx_bytes") {
		t.Errorf("bad rx_bytes: %v, want the file named", err)
	}
	if _, err := c.Bytes("nope0", DirEgress); err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("missing device: %v", err)
	}
	// The real sysfs: loopback always exists.
	if _, err := (SysfsCounters{}).Bytes("lo", DirEgress); err != nil {
		t.Errorf("/sys/class/net/lo: %v", err)
	}
}

// A probe that has not come back is held only against the direction whose one-way delay shows
// the queue: an upload probing above the capacity must not make the download cut itself.
func TestAttributePending(t *testing.T) {
	feed := func(d *dirState, ms ...int) {
		for _, v := range ms {
			d.noteDelay(time.Duration(v) * time.Millisecond)
		}
	}
	up, down := &dirState{dir: DirEgress}, &dirState{dir: DirIngress}
	all := []*dirState{up, down}
	const pending = 300 * time.Millisecond
	if got := attributePending(up, all, pending); got != pending {
		t.Fatalf("no samples yet: upload got %v, want %v", got, pending)
	}
	feed(up, 20, 20, 30, 45)   // the upload's queue grows
	feed(down, 20, 21, 20, 20) // the download's does not
	if got := attributePending(up, all, pending); got != pending {
		t.Errorf("upload (queue rising): got %v, want %v", got, pending)
	}
	// The download gets the age less the upload's 25 ms of queue: what the upload's queue
	// does not explain.
	// (25 ms within a millisecond: the baseline creeps up very slowly.)
	if got, want := attributePending(down, all, pending), pending-25*time.Millisecond; got < want-time.Millisecond || got > want+time.Millisecond {
		t.Errorf("download (no queue) got %v of pending, want %v", got, want)
	}
	if got := attributePending(down, all, 20*time.Millisecond); got != 0 {
		t.Errorf("download with a pending age the upload's queue explains: got %v, want 0", got)
	}
	// Round trips only, or a step in both directions: both see the same, both get it.
	feed(down, 45)
	for _, d := range all {
		if got := attributePending(d, all, pending); got != pending {
			t.Errorf("%v with equal delays: got %v, want %v", d.dir, got, pending)
		}
	}
	if got := attributePending(down, all, 0); got != 0 {
		t.Errorf("nothing pending: got %v", got)
	}
}

// The ingress is shaped after the modem's queue: its counter (the uplink's rx) reads what
// left that queue, and its controller must know, or it takes the capacity it measures for
// an input rate and divides it by the delay gradient once more.
func TestServiceIngressControllerCountsOutput(t *testing.T) {
	s, err := NewService(ServiceOptions{Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := lteConfig("")
	cfg.Ingress = &DirectionConfig{Bandwidth: 50e6, Autorate: &AutorateConfig{Enabled: true, Min: 2e6, Max: 80e6}}
	if err := s.Apply([]Uplink{{Name: "lte", Device: "wwan0", Config: cfg}}); err != nil {
		t.Fatal(err)
	}
	u := s.uplinks["lte"]
	if len(u.dirs) != 2 {
		t.Fatalf("%d directions, want 2", len(u.dirs))
	}
	for _, d := range u.dirs {
		l, ok := d.ctrl.(*autorate.Lifeline)
		if !ok {
			t.Fatalf("%v: controller %T, want *autorate.Lifeline", d.dir, d.ctrl)
		}
		if got, want := l.Config().CountsOutput, d.dir == DirIngress; got != want {
			t.Errorf("%v: CountsOutput %v, want %v", d.dir, got, want)
		}
	}
}

// OnDecision sees every decision of an autorate direction with the sample the controller
// got (the VM bench logs the controller's inputs through it).
func TestServiceOnDecision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := newFakeBackend()
		w := &world{be: be, dev: "wwan0", capa: func(time.Time) float64 { return 40e6 }, loaded: func(time.Time) bool { return true }}
		var calls, delays int
		var last autorate.Sample
		s, err := NewService(ServiceOptions{Backend: be, Delays: w, Counters: w,
			OnDecision: func(uplink string, dir Dir, sm autorate.Sample, c autorate.Controller) {
				if uplink != "lte" || dir != DirEgress {
					t.Errorf("OnDecision(%q, %v): only lte's egress runs autorate", uplink, dir)
				}
				if _, ok := c.(*autorate.Lifeline); !ok {
					t.Errorf("OnDecision: controller %T", c)
				}
				calls++
				delays += len(sm.Delays)
				last = sm
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Apply([]Uplink{{Name: "lte", Device: "wwan0", Config: lteConfig("")}}); err != nil {
			t.Fatal(err)
		}
		step, stop := runLoop(t, s, w)
		defer stop()
		step(20)
		if calls != 20 || delays == 0 || last.TxBytes == 0 {
			t.Errorf("OnDecision: %d calls in 20 ticks, %d delay samples, last %+v", calls, delays, last)
		}
	})
}
