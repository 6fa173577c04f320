package sqm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-router/lifeline/sqm/autorate"
)

// Backend is what Service needs of the kernel side; *Shaper implements it. Tests and the
// simulated bench put a fake behind it, so the same loop runs in go test, the lab, qemu and on
// the router.
type Backend interface {
	Ensure(Shape) error
	SetRate(dev string, dir Dir, bps uint64) error
	Stats(dev string, dir Dir) (CakeStats, error)
	Remove(dev string) error
}

// DelaySource gives the results of the probes that run inside each uplink's tunnel (the
// uplinks/probe Prober implements it). What the autorate loop needs from it:
//
//   - DelaySamples returns, oldest first, the probe results of uplink that reached the router
//     strictly after `after` (by ReceivedAt, on the source's own clock; the zero time means
//     "whatever you still hold"). Every sample must have SentAt, Delay and ReceivedAt set, and
//     IssuedAt when SentAt is not when the probe left the router (the download's one-way
//     delay: SentAt is the far end's echo; OldestPending counts from IssuedAt). The
//     Service passes the ReceivedAt of the last sample it got, so the source must keep at
//     least ~2 s of results (the loop polls every Tick, 50 ms by default). Delay is the one-way
//     delay of dir when the responder timestamps its echo (the clocks' offset cancels: only
//     changes matter); a source that only has round trips returns the RTT for both directions,
//     which works but lets a bloated download also cut the upload rate. Lost probes are simply
//     absent. Under load the controller wants a sample every 20–50 ms.
//   - OldestPending is the age of the oldest probe on uplink sent but neither answered nor
//     given up as lost (0 when none): a probe stuck in a bloated modem buffer tells the
//     controller before its result arrives. Give up (drop from pending) after ~2 s.
//
// Both are called from the Service's loop goroutine and must not block.
type DelaySource interface {
	DelaySamples(uplink string, dir Dir, after time.Time) []autorate.DelaySample
	OldestPending(uplink string) time.Duration
}

// HintSource is the modem's view of an uplink (feed-forward): nil when it has none, or when the
// last reading is older than a couple of seconds.
type HintSource interface {
	ModemHint(uplink string, dir Dir) *autorate.ModemHint
}

// Counters reads the cumulative byte counter of one direction of dev: what the shaped direction
// actually carried.
type Counters interface {
	Bytes(dev string, dir Dir) (uint64, error)
}

// SysfsCounters reads /sys/class/net/<dev>/statistics/{tx,rx}_bytes. Root is the class/net
// directory, "" = /sys/class/net (a sysfs mounted inside another netns shows that netns).
type SysfsCounters struct{ Root string }

func (c SysfsCounters) Bytes(dev string, dir Dir) (uint64, error) {
	root := c.Root
	if root == "" {
		root = "/sys/class/net"
	}
	f := "tx_bytes"
	if dir == DirIngress {
		f = "rx_bytes" // what arrived on the uplink, before the IFB shaped it
	}
	p := filepath.Join(root, dev, "statistics", f)
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("ReadFile(%s): %w", p, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ParseUint(%s): %w", p, err)
	}
	return v, nil
}

// Clock gives the loop its time and ticks; tests inject a fake so no test sleeps.
type Clock interface {
	Now() time.Time
	// Ticker delivers the tick instants every d until stop is called.
	Ticker(d time.Duration) (c <-chan time.Time, stop func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) Ticker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// Uplink is one shaped uplink: its name (as in the config and the DelaySource), its device and
// its "sqm" section.
type Uplink struct {
	Name   string
	Device string
	Config UplinkConfig
}

// ServiceOptions configures a Service. Only Backend is required.
type ServiceOptions struct {
	Backend  Backend
	Delays   DelaySource // nil: autorate directions hold their start rate (state "no-probes")
	Hints    HintSource  // nil: no modem hints
	Counters Counters    // nil: SysfsCounters{}
	Clock    Clock       // nil: the real clock
	// Tick is the loop period: counters read, probes collected, rate decided. Default 50 ms.
	Tick time.Duration
	// MinChange is the smallest relative change worth a tc call (default 0.01): the controller
	// may move by less per tick, the kernel then sees the sum once it matters.
	MinChange float64
	// ActiveBps: below this achieved rate (or a quarter of the rate, if lower) a direction is
	// idle and its rate is not touched (default 1 Mbit/s).
	ActiveBps uint64
	// EnsureRetry: how often an uplink whose set-up failed (device not there yet, modem
	// re-enumerated) is set up again. Default 1 s.
	EnsureRetry time.Duration
	// Logf reports set-up failures and recoveries (once per change); nil = silent.
	Logf func(format string, args ...any)
	// OnDecision, when set, is called from the loop after every controller decision with
	// the controller's input and the controller (for a bench or a debug log of what it saw
	// and did; it must not block and must not keep s).
	OnDecision func(uplink string, dir Dir, s autorate.Sample, ctrl autorate.Controller)
}

// Service keeps CAKE on a set of uplinks and runs the autorate loop of every
// autorate-enabled direction. It is safe for concurrent use; Run runs the loop.
type Service struct {
	o       ServiceOptions
	mu      sync.Mutex
	uplinks map[string]*uplinkState
	order   []string // names in Apply order, for stable status and metrics
}

type uplinkState struct {
	name, dev  string
	cfg        UplinkConfig
	shape      Shape
	dirs       []*dirState
	ensured    bool
	lastEnsure time.Time
	ensureErr  error
}

type dirState struct {
	dir        Dir
	bounds     autorate.Bounds
	controller string
	ctrl       autorate.Controller // nil: fixed rate
	fixed      uint64
	applied    uint64 // rate in the kernel as far as we know; 0 = unknown
	cursor     time.Time
	// Achieved rate over the last second, from the counter.
	hist     []counterPoint
	achieved float64
	changes  uint64
	err      error
	// This tick's input to the controller, and the one-way delay over its minimum.
	sample     autorate.Sample
	base       float64 // seconds
	excess     time.Duration
	haveExcess bool
}

type counterPoint struct {
	at    time.Time
	bytes uint64
}

// NewService returns a Service with no uplinks; Apply gives it some.
func NewService(o ServiceOptions) (*Service, error) {
	if o.Backend == nil {
		return nil, errors.New("sqm: NewService: Backend is nil")
	}
	if o.Counters == nil {
		o.Counters = SysfsCounters{}
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Tick <= 0 {
		o.Tick = 50 * time.Millisecond
	}
	if o.MinChange <= 0 {
		o.MinChange = 0.01
	}
	if o.ActiveBps == 0 {
		o.ActiveBps = 1e6
	}
	if o.EnsureRetry <= 0 {
		o.EnsureRetry = time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return &Service{o: o, uplinks: map[string]*uplinkState{}}, nil
}

// Apply makes the set of shaped uplinks match ups: new ones are set up, changed ones set up
// again (controllers restart only when their direction's config changed), missing ones
// removed. The whole list is validated first and nothing is applied when an entry is bad.
// Set-up failures of single uplinks (device absent, no sch_cake) are returned, joined, and
// retried by Run every EnsureRetry: the uplink stays registered.
func (s *Service) Apply(ups []Uplink) error {
	shapes := make([]Shape, len(ups))
	seen := map[string]bool{}
	devs := map[string]string{}
	for i, u := range ups {
		if u.Name == "" {
			return fmt.Errorf("sqm: uplink %d: empty name", i)
		}
		if seen[u.Name] {
			return fmt.Errorf("sqm: uplink %q listed twice", u.Name)
		}
		seen[u.Name] = true
		if other, ok := devs[u.Device]; ok {
			return fmt.Errorf("sqm: uplinks %q and %q share device %q", other, u.Name, u.Device)
		}
		devs[u.Device] = u.Name
		sh, err := u.Config.Shape(u.Device)
		if err != nil {
			return fmt.Errorf("sqm: uplink %q: %w", u.Name, err)
		}
		shapes[i] = sh
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, name := range s.order {
		if !seen[name] {
			if err := s.removeLocked(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	now := s.o.Clock.Now()
	s.order = s.order[:0]
	for i, u := range ups {
		s.order = append(s.order, u.Name)
		st := s.uplinks[u.Name]
		if st != nil && st.dev != u.Device {
			if err := s.o.Backend.Remove(st.dev); err != nil {
				errs = append(errs, fmt.Errorf("sqm: uplink %q: moving from %s: %w", u.Name, st.dev, err))
			}
			st = nil
		}
		if st == nil {
			st = &uplinkState{name: u.Name, dev: u.Device}
			s.uplinks[u.Name] = st
		}
		old := st.cfg
		st.cfg, st.shape = u.Config, shapes[i]
		dirs := make([]*dirState, 0, 2)
		for _, dir := range []Dir{DirEgress, DirIngress} {
			dc := u.Config.direction(dir)
			if dc == nil {
				continue
			}
			if prev := st.find(dir); prev != nil && reflect.DeepEqual(old.direction(dir), dc) {
				dirs = append(dirs, prev)
				continue
			}
			dirs = append(dirs, newDirState(dir, dc))
		}
		st.dirs = dirs
		if err := s.ensureLocked(st, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newDirState(dir Dir, dc *DirectionConfig) *dirState {
	d := &dirState{dir: dir, fixed: uint64(dc.Bandwidth)}
	if b, ok := dc.bounds(); ok {
		d.bounds = b
		d.controller = dc.Autorate.Controller
		if d.controller == "" {
			d.controller = ControllerLifeline
		}
		if d.controller == ControllerCakeAutorate {
			d.ctrl = autorate.NewBaseline(autorate.DefaultBaseline(b))
		} else {
			cfg := autorate.DefaultLifeline(b)
			if dir == DirIngress {
				// The ingress counter (the uplink's rx) is downstream of the modem's queue.
				cfg = autorate.DefaultLifelineDownload(b)
			}
			d.ctrl = autorate.NewLifeline(cfg)
		}
		d.fixed = b.Base
	}
	return d
}

func (u *uplinkState) find(dir Dir) *dirState {
	for _, d := range u.dirs {
		if d.dir == dir {
			return d
		}
	}
	return nil
}

func (s *Service) ensureLocked(u *uplinkState, now time.Time) error {
	u.lastEnsure = now
	err := s.o.Backend.Ensure(u.shape)
	if err != nil {
		err = fmt.Errorf("sqm: uplink %q: %w", u.name, err)
		if u.ensureErr == nil || u.ensureErr.Error() != err.Error() {
			s.o.Logf("%v (retrying every %v)", err, s.o.EnsureRetry)
		}
		u.ensured, u.ensureErr = false, err
		return err
	}
	if u.ensureErr != nil {
		s.o.Logf("sqm: uplink %q: set up on %s", u.name, u.dev)
	}
	u.ensured, u.ensureErr = true, nil
	for _, d := range u.dirs {
		// Ensure leaves a kernel rate within the autorate bounds alone; not knowing which it
		// kept, the next tick sets the controller's rate.
		d.applied = 0
		if d.ctrl == nil {
			d.applied = d.fixed
		}
		d.err = nil
	}
	return nil
}

// Remove takes CAKE and the IFB off the uplink's device and forgets it.
func (s *Service) Remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.removeLocked(name)
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	return err
}

func (s *Service) removeLocked(name string) error {
	u, ok := s.uplinks[name]
	if !ok {
		return nil
	}
	delete(s.uplinks, name)
	if err := s.o.Backend.Remove(u.dev); err != nil {
		return fmt.Errorf("sqm: uplink %q: %w", name, err)
	}
	return nil
}

// Close removes every uplink's shaping.
func (s *Service) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, name := range s.order {
		errs = append(errs, s.removeLocked(name))
	}
	s.order = nil
	return errors.Join(errs...)
}

// Run drives the autorate loop until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	c, stop := s.o.Clock.Ticker(s.o.Tick)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-c:
			s.step(now)
		}
	}
}

func (s *Service) step(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range s.order {
		u := s.uplinks[name]
		if !u.ensured {
			if now.Sub(u.lastEnsure) >= s.o.EnsureRetry {
				s.ensureLocked(u, now)
			}
			if !u.ensured {
				continue
			}
		}
		// Collect every direction's samples first: a probe that has not come back is
		// attributed to the direction(s) it can be stuck in (see attributePending).
		var ready []*dirState
		for _, d := range u.dirs {
			if d.ctrl == nil {
				continue
			}
			if err := s.collect(u, d, now); err != nil {
				d.err = err
				continue
			}
			ready = append(ready, d)
		}
		pending := time.Duration(0)
		if s.o.Delays != nil && len(ready) > 0 {
			// After the samples: a probe answered meanwhile is among them, not pending. The
			// age is taken later than the tick's instant (the loop may run late); the
			// controllers compare At − OldestPending with the probes' send times, so it is
			// given as of At.
			pending = s.o.Delays.OldestPending(u.name)
			if lag := s.o.Clock.Now().Sub(now); lag > 0 && pending > 0 {
				pending = max(pending-lag, 0)
			}
		}
		for _, d := range ready {
			if s.o.Delays != nil {
				d.sample.OldestPending = attributePending(d, ready, pending)
			}
			if err := s.applyDir(u, d); err != nil {
				d.err = err
			}
		}
	}
}

// PendingMargin: a probe that has not come back is not held against a direction whose latest
// one-way delay is this much below another direction's (see attributePending).
const PendingMargin = 5 * time.Millisecond

// attributePending gives d the age of the oldest unanswered probe, less the queue another
// direction's latest one-way delay shows and d's does not: the probe's age is both legs'
// queues, and that part of it is most likely in the other direction. Without this, an
// upload that probes a little above the capacity makes every probe late, and the
// download's controller took that for its own queue. Taking all of the pending age away
// (as this once did) left a direction blind in a step of both directions at once: on the
// real kernel after 80→10 the download's queue showed first and the upload kept its
// 40 Mbit/s for 350 ms. With round trips only (both directions the same) both get it all.
func attributePending(d *dirState, all []*dirState, pending time.Duration) time.Duration {
	if pending == 0 || !d.haveExcess {
		return pending
	}
	var elsewhere time.Duration
	for _, o := range all {
		if o != d && o.haveExcess && o.excess > d.excess+PendingMargin {
			elsewhere = max(elsewhere, o.excess)
		}
	}
	return max(pending-elsewhere, 0)
}

// collect reads the counter, the new probe results and the hint of one direction.
func (s *Service) collect(u *uplinkState, d *dirState, now time.Time) error {
	b, err := s.o.Counters.Bytes(u.dev, d.dir)
	if err != nil {
		return err
	}
	d.meter(now, b)
	d.sample = autorate.Sample{At: now, TxBytes: b}
	if s.o.Delays == nil {
		return nil
	}
	d.sample.Delays = s.o.Delays.DelaySamples(u.name, d.dir, d.cursor)
	if n := len(d.sample.Delays); n > 0 {
		d.cursor = d.sample.Delays[n-1].ReceivedAt
	}
	for _, ds := range d.sample.Delays {
		d.noteDelay(ds.Delay)
	}
	if s.o.Hints != nil {
		d.sample.Hint = s.o.Hints.ModemHint(u.name, d.dir)
	}
	return nil
}

// noteDelay keeps the delay over its minimum, with a baseline as cake-autorate keeps it (down
// at once, up very slowly). Only for attributePending; the controllers keep their own.
func (d *dirState) noteDelay(delay time.Duration) {
	v := delay.Seconds()
	if !d.haveExcess || v < d.base {
		d.base = v
	} else {
		d.base += (v - d.base) * 0.001
	}
	d.excess, d.haveExcess = time.Duration((v-d.base)*float64(time.Second)), true
}

// applyDir feeds the collected sample to the controller and applies its rate.
func (s *Service) applyDir(u *uplinkState, d *dirState) error {
	if s.o.Delays == nil {
		return nil
	}
	d.ctrl.Observe(d.sample)
	if s.o.OnDecision != nil {
		s.o.OnDecision(u.name, d.dir, d.sample, d.ctrl)
	}
	want := min(max(d.ctrl.Rate(), d.bounds.Min), d.bounds.Max)
	if !s.worthApplying(d, want) {
		return nil
	}
	if err := s.o.Backend.SetRate(u.dev, d.dir, want); err != nil {
		// The qdisc or the device may be gone (modem re-enumerated): set up again.
		u.ensured = false
		u.ensureErr = err
		return err
	}
	d.applied = want
	d.changes++
	d.err = nil
	return nil
}

// worthApplying: a change of at least MinChange (or onto a bound), and never while the
// direction is idle, where no measurement supports a change and tc calls would only churn.
func (s *Service) worthApplying(d *dirState, want uint64) bool {
	if d.applied == 0 {
		return true
	}
	if want == d.applied {
		return false
	}
	active := min(float64(s.o.ActiveBps), float64(d.applied)/4)
	if d.achieved < active {
		return false
	}
	diff := float64(want) - float64(d.applied)
	if diff < 0 {
		diff = -diff
	}
	return diff >= s.o.MinChange*float64(d.applied) || want == d.bounds.Min || want == d.bounds.Max
}

// meter keeps a second of counter readings and the achieved rate over it.
func (d *dirState) meter(now time.Time, b uint64) {
	if n := len(d.hist); n > 0 && b < d.hist[n-1].bytes {
		d.hist = d.hist[:0] // counter reset: device re-created
	}
	d.hist = append(d.hist, counterPoint{now, b})
	cut := 0
	for cut < len(d.hist)-2 && now.Sub(d.hist[cut+1].at) >= time.Second {
		cut++
	}
	d.hist = d.hist[cut:]
	d.achieved = 0
	if n := len(d.hist); n >= 2 {
		if dt := d.hist[n-1].at.Sub(d.hist[0].at).Seconds(); dt > 0 {
			d.achieved = float64(d.hist[n-1].bytes-d.hist[0].bytes) * 8 / dt
		}
	}
}

// DirectionStatus is one shaped direction, for `lifeline status`.
type DirectionStatus struct {
	Uplink    string `json:"uplink"`
	Device    string `json:"device"`
	Direction string `json:"direction"`
	// Controller is "fixed", "lifeline" or "cake-autorate".
	Controller string `json:"controller"`
	RateBps    uint64 `json:"rate_bps"`   // in the kernel as far as we know (0 = being set up)
	TargetBps  uint64 `json:"target_bps"` // what the controller wants now
	MinBps     uint64 `json:"min_bps,omitempty"`
	MaxBps     uint64 `json:"max_bps,omitempty"`
	// State is the controller's last decision (grow, hold, drain, blind-cut, ...), or
	// "no-probes" / "setup-failed".
	State            string  `json:"state"`
	CapacityEstimate uint64  `json:"capacity_estimate_bps,omitempty"`
	AchievedBps      float64 `json:"achieved_bps"`
	RateChanges      uint64  `json:"rate_changes"`
	// CAKE's statistics; Stats is false when they could not be read.
	Stats        bool          `json:"stats"`
	BacklogBytes uint64        `json:"backlog_bytes"`
	Drops        uint64        `json:"drops"`
	Marks        uint64        `json:"marks"`
	PeakDelay    time.Duration `json:"peak_delay_ns"`
	Error        string        `json:"error,omitempty"`
}

type dirSnap struct {
	st   DirectionStatus
	dev  string
	dir  Dir
	tins []string
}

func (s *Service) snapshot() []dirSnap {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []dirSnap
	for _, name := range s.order {
		u := s.uplinks[name]
		for _, d := range u.dirs {
			st := DirectionStatus{
				Uplink: u.name, Device: u.dev, Direction: d.dir.String(), Controller: "fixed",
				RateBps: d.applied, TargetBps: d.fixed, AchievedBps: d.achieved, RateChanges: d.changes, State: "fixed",
			}
			if d.ctrl != nil {
				st.Controller, st.TargetBps, st.MinBps, st.MaxBps = d.controller, d.ctrl.Rate(), d.bounds.Min, d.bounds.Max
				st.State = "running"
				if c, ok := d.ctrl.(interface{ State() string }); ok {
					st.State = c.State()
				}
				if c, ok := d.ctrl.(interface{ CapacityEstimate() uint64 }); ok {
					st.CapacityEstimate = c.CapacityEstimate()
				}
				if s.o.Delays == nil {
					st.State = "no-probes"
				}
			}
			if d.err != nil {
				st.Error = d.err.Error()
			}
			if !u.ensured {
				st.State = "setup-failed"
				if u.ensureErr != nil {
					st.Error = u.ensureErr.Error()
				}
			}
			dc := u.cfg.direction(d.dir)
			out = append(out, dirSnap{st: st, dev: u.dev, dir: d.dir, tins: tinNames(dc.Diffserv)})
		}
	}
	return out
}

// Status reads every shaped direction, with CAKE's statistics where the kernel gives them.
func (s *Service) Status() []DirectionStatus {
	snaps := s.snapshot()
	out := make([]DirectionStatus, len(snaps))
	for i, sn := range snaps {
		st := sn.st
		if cs, err := s.o.Backend.Stats(sn.dev, sn.dir); err == nil {
			st.Stats = true
			st.BacklogBytes, st.Drops, st.Marks, st.PeakDelay = cs.Totals()
		}
		out[i] = st
	}
	return out
}

// tinNames are CAKE's tin names in index order for the diffserv mode (tc -s qdisc's headings).
func tinNames(diffserv string) []string {
	switch diffserv {
	case "", "diffserv3":
		return []string{"bulk", "best_effort", "voice"}
	case "diffserv4":
		return []string{"bulk", "best_effort", "video", "voice"}
	}
	return nil // besteffort, diffserv8, precedence: "tin0".. "tin7"
}

func tinLabel(names []string, i int) string {
	if i < len(names) {
		return names[i]
	}
	return "tin" + strconv.Itoa(i)
}

var _ Backend = (*Shaper)(nil)
