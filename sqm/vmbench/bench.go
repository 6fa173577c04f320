package vmbench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeline-router/lifeline/lab/traces"
	"github.com/lifeline-router/lifeline/sqm"
	"github.com/lifeline-router/lifeline/sqm/autorate"
	"github.com/lifeline-router/lifeline/sqm/autorate/simlink"
)

// Options tune the bench; zero fields take the defaults of Defaults.
type Options struct {
	ModemBuffer   uint32        // bytes of each modem FIFO
	BaseOWD       time.Duration // one-way delay of the mobile core, each way
	ProbeInterval time.Duration
	Flows         int           // TCP flows per direction
	Sample        time.Duration // timeline resolution
	// Scale multiplies every capacity, bound and fixed rate (1 = as in the traces), for a VM
	// that cannot carry the traces' rates.
	Scale float64
	Logf  func(format string, args ...any)
	// Contenders, when not empty, names the contenders to run (default: all of Contenders).
	Contenders []string
	// Decisions logs every decision of our controller (its inputs and state) through Logf.
	Decisions bool
}

// Defaults fills zero fields.
func (o Options) Defaults() Options {
	if o.ModemBuffer == 0 {
		o.ModemBuffer = 1500000 // 150 ms at 80 Mbit/s, 1.2 s at 10 Mbit/s
	}
	if o.BaseOWD == 0 {
		o.BaseOWD = 15 * time.Millisecond
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = 20 * time.Millisecond
	}
	if o.Flows == 0 {
		o.Flows = 2
	}
	if o.Sample == 0 {
		o.Sample = 50 * time.Millisecond
	}
	if o.Scale == 0 {
		o.Scale = 1
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// Scenario is a trace with its load schedule and the instant of its step, if any.
type Scenario struct {
	Trace   traces.Trace
	StepAt  time.Duration // 0 = no step
	LoadFor time.Duration // 0 = loaded for the whole trace; else idle afterwards
}

// Scenarios are the traces of issue 4 from lab/traces.
func Scenarios() ([]Scenario, error) {
	var out []Scenario
	for _, s := range []struct {
		name    string
		step    bool
		loadFor time.Duration
	}{
		{"step-80-to-10", true, 0},
		{"step-20-to-80", true, 0},
		{"random-walk", false, 0},
		{"idle-40", false, 4 * time.Second},
	} {
		tr, err := traces.Load(s.name)
		if err != nil {
			return nil, err
		}
		sc := Scenario{Trace: tr, LoadFor: s.loadFor}
		if s.step {
			sc.StepAt = tr.Points[1].At // a step trace: the second point is the step
		}
		out = append(out, sc)
	}
	return out, nil
}

// Contender is a controller set-up: nil Config means no shaping at all.
type Contender struct {
	Name   string
	Config *sqm.UplinkConfig
	// Oracle, when > 0, sets CAKE to this share of the trace's capacity at every change of
	// the trace, as it happens: a controller that knows the future. It is not a product
	// mode but a floor: what the load's own TCP does behind a perfect rate (how fast it
	// ramps into a step up, how long a remote sender takes to drain the modem's queue after
	// a step down). What a real controller adds above it is the controller's.
	Oracle float64
}

// OracleShare is the oracle's share of the capacity: CAKE a little below the line rate, as
// every contender that shapes settles.
const OracleShare = 0.95

// Bounds of the autorate contenders (as the simulated bench): cake-autorate's download
// defaults with a 2 Mbit/s floor.
var Bounds = simlink.DefaultBounds

// Contenders are the four of issue 4, rates multiplied by scale except the autorate floor:
// Min stays at 2 Mbit/s, because what limits a floor is the time one frame takes (6 ms at
// 2 Mbit/s), which does not scale (the traces stay above it). CAKE is set as the seed sets it
// on wwan0 (diffserv4, ack-filter on the upload) in both directions.
func Contenders(scale float64) []Contender {
	dir := func(egress bool, ctrl string) *sqm.DirectionConfig {
		d := &sqm.DirectionConfig{Bandwidth: sqm.Rate(20e6 * scale), Diffserv: "diffserv4", AckFilter: egress}
		if ctrl != "" {
			d.Autorate = &sqm.AutorateConfig{Enabled: true, Controller: ctrl,
				Min: sqm.Rate(min(Bounds.Min, uint64(float64(Bounds.Base)*scale))), Base: sqm.Rate(float64(Bounds.Base) * scale), Max: sqm.Rate(float64(Bounds.Max) * scale)}
		}
		return d
	}
	cfg := func(ctrl string) *sqm.UplinkConfig {
		return &sqm.UplinkConfig{Egress: dir(true, ctrl), Ingress: dir(false, ctrl)}
	}
	return []Contender{
		{Name: "none"},
		{Name: "fixed-20mbit", Config: cfg("")},
		{Name: "cake-autorate", Config: cfg(sqm.ControllerCakeAutorate)},
		{Name: "lifeline", Config: cfg(sqm.ControllerLifeline)},
		{Name: "oracle", Config: cfg(""), Oracle: OracleShare},
	}
}

// Sample is one instant of a run's timeline. Rates in bit/s, 0 = no shaper.
type Sample struct {
	T                  time.Duration
	CapUp, CapDown     float64
	RateUp, RateDown   float64
	DelivUp, DelivDown float64 // what the modem put on the air over the last Options.Sample
	Loaded             bool
}

// ProbeSample is one answered probe's added one-way delay per direction.
type ProbeSample struct {
	T        time.Duration // sent, from the run's start
	Up, Down time.Duration
	Loaded   bool
}

// RunData is one contender on one scenario.
type RunData struct {
	Scenario, Contender string
	Duration            time.Duration
	Timeline            []Sample
	Probes              []ProbeSample
	ChangesUp           []time.Duration // rate changes applied to the kernel
	ChangesDown         []time.Duration
	Sent, Lost          int     // probes
	CPUBusy             float64 // share of the (virtual) CPUs busy during the run
}

// Bench owns the topology, the modem link, the load and the prober.
type Bench struct {
	o        Options
	topo     *Topology
	link     *Link
	load     *Load
	prober   *Prober
	counters *nsCounters
	closers  []func()
	rtfd     int
	// Base one-way delays measured on the idle link.
	BaseUp, BaseDown time.Duration
}

// NewBench builds everything and measures the idle link's delays.
func NewBench(o Options) (_ *Bench, err error) {
	o = o.Defaults()
	b := &Bench{o: o}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if b.topo, err = NewTopology(fmt.Sprintf("%dus", o.BaseOWD.Microseconds())); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { b.topo.Close() })
	if b.link, err = NewLink(b.topo, traces.Point{Up: 40e6, Down: 40e6}, o.ModemBuffer); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { b.link.Close() })
	if b.load, err = NewLoad(b.topo); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, b.load.Close)
	if b.prober, err = StartProber(b.topo, o.ProbeInterval); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, b.prober.Close)
	var done func()
	if b.counters, done, err = newNSCounters(b.topo.RT); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, done)
	if b.rtfd, err = unix.Open("/run/netns/"+b.topo.RT, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("open netns %s: %w", b.topo.RT, err)
	}
	b.closers = append(b.closers, func() { unix.Close(b.rtfd) })
	start := time.Now()
	if err := b.waitProbes(start, 40, 10*time.Second); err != nil {
		return nil, err
	}
	b.BaseUp, b.BaseDown = time.Hour, time.Hour
	for _, r := range b.prober.Results(start, time.Now()) {
		b.BaseUp, b.BaseDown = min(b.BaseUp, r.Up()), min(b.BaseDown, r.Down())
	}
	o.Logf("idle one-way delay: up %v, down %v", b.BaseUp, b.BaseDown)
	return b, nil
}

func (b *Bench) waitProbes(from time.Time, n int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for len(b.prober.Results(from, time.Now())) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("vmbench: %d probe answers within %v, want %d (is the path up?)", len(b.prober.Results(from, time.Now())), d, n)
		}
		time.Sleep(b.o.ProbeInterval) // polling a condition with a deadline
	}
	return nil
}

// Close tears everything down, in reverse order.
func (b *Bench) Close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// Link gives the modem side (for tests).
func (b *Bench) Link() *Link { return b.link }

// Topology gives the namespaces.
func (b *Bench) Topology() *Topology { return b.topo }

// recorder is the Service's backend: the real Shaper, plus a log of the rates it was told.
type recorder struct {
	sqm.Backend
	mu      sync.Mutex
	start   time.Time
	rate    [2]uint64
	changes [2][]time.Duration
}

func (r *recorder) Ensure(s sqm.Shape) error {
	err := r.Backend.Ensure(s)
	if err == nil {
		r.mu.Lock()
		// A fresh qdisc starts at the configured bandwidth; the Service sets the controller's
		// rate on its next tick.
		if r.rate[sqm.DirEgress] == 0 {
			r.rate[sqm.DirEgress] = s.Egress.Bandwidth
		}
		if r.rate[sqm.DirIngress] == 0 {
			r.rate[sqm.DirIngress] = s.Ingress.Bandwidth
		}
		r.mu.Unlock()
	}
	return err
}

func (r *recorder) SetRate(dev string, dir sqm.Dir, bps uint64) error {
	err := r.Backend.SetRate(dev, dir, bps)
	if err == nil {
		r.mu.Lock()
		if r.rate[dir] != bps {
			r.changes[dir] = append(r.changes[dir], time.Since(r.start))
		}
		r.rate[dir] = bps
		r.mu.Unlock()
	}
	return err
}

func (r *recorder) rates() (up, down float64) {
	if r == nil {
		return 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return float64(r.rate[sqm.DirEgress]), float64(r.rate[sqm.DirIngress])
}

// Bytes implements sqm.Counters for the router's namespace.
func (c *nsCounters) Bytes(dev string, dir sqm.Dir) (uint64, error) {
	ln, err := c.h.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("LinkByName(%s): %w", dev, err)
	}
	st := ln.Attrs().Statistics
	if st == nil {
		return 0, fmt.Errorf("LinkByName(%s): no statistics", dev)
	}
	if dir == sqm.DirIngress {
		return st.RxBytes, nil
	}
	return st.TxBytes, nil
}

// Controlled is what a running contender exposes to a caller watching it (tests).
type Controlled struct {
	rec *recorder
	svc *sqm.Service
}

// Rates are the CAKE rates last applied (0 = no shaper).
func (c *Controlled) Rates() (up, down float64) { return c.rec.rates() }

// Status is the Service's status (nil without shaping).
func (c *Controlled) Status() []sqm.DirectionStatus {
	if c.svc == nil {
		return nil
	}
	return c.svc.Status()
}

// Run runs contender c on scenario sc. watch, when not nil, is called at every timeline
// sample.
func (b *Bench) Run(ctx context.Context, sc Scenario, c Contender, watch func(Sample, *Controlled)) (*RunData, error) {
	o := b.o
	tr := sc.Trace.Scaled(o.Scale, 1)
	if err := b.link.Set(tr.At(0)); err != nil {
		return nil, err
	}
	if err := b.link.WaitDrained(10 * time.Second); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctl := &Controlled{}
	var svcDone chan error
	start := time.Now()
	if c.Config != nil {
		shaper, err := sqm.New(sqm.Options{NetNS: b.rtfd})
		if err != nil {
			return nil, err
		}
		defer shaper.Close()
		ctl.rec = &recorder{Backend: shaper, start: start}
		so := sqm.ServiceOptions{Backend: ctl.rec, Delays: b.prober, Counters: b.counters, Logf: o.Logf}
		if o.Decisions {
			so.OnDecision = func(_ string, dir sqm.Dir, s autorate.Sample, c autorate.Controller) {
				l, ok := c.(*autorate.Lifeline)
				if !ok {
					return
				}
				in := l.Inputs()
				o.Logf("decision %7.3f %-7s %-9s rate %6.2f cap %6.2f ach %6.2f loaded %-5v n %d q %6.1f blind %6.1f pend %6.1f rep %5.1f tgt %4.1f/%4.1f",
					s.At.Sub(start).Seconds(), dir, l.State(), float64(l.Rate())/1e6, in.CapEst/1e6, in.Achieved/1e6, in.Loaded, in.Samples,
					ms(in.Queue), ms(in.Blind), ms(s.OldestPending), ms(in.ReportAge), ms(in.Target), ms(in.Congested))
			}
		}
		ctl.svc, err = sqm.NewService(so)
		if err != nil {
			return nil, err
		}
		if err := ctl.svc.Apply([]sqm.Uplink{{Name: "lte", Device: Uplink, Config: *c.Config}}); err != nil {
			return nil, err
		}
		defer ctl.svc.Close()
		svcDone = make(chan error, 1)
		go func() { svcDone <- ctl.svc.Run(ctx) }()
	}
	start = time.Now()
	if ctl.rec != nil {
		ctl.rec.mu.Lock()
		ctl.rec.start = start
		ctl.rec.mu.Unlock()
	}
	cpu0 := readCPU()
	followErr := make(chan error, 1)
	go func() { followErr <- b.link.Follow(ctx, tr, start) }()
	var oracleErr chan error // nil (never ready) without an oracle
	if c.Oracle > 0 && ctl.rec != nil {
		oracleErr = make(chan error, 1)
		go func() { oracleErr <- followOracle(ctx, tr, start, c.Oracle, ctl.rec) }()
	}
	if err := b.load.Start(o.Flows, o.Flows); err != nil {
		return nil, err
	}
	defer b.load.Stop()
	loaded := true
	rd := &RunData{Scenario: sc.Trace.Name, Contender: c.Name, Duration: tr.Duration()}
	lastUp, lastDown, err := b.link.Delivered()
	if err != nil {
		return nil, err
	}
	lastAt := time.Now()
	tk := time.NewTicker(o.Sample)
	defer tk.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-followErr:
			if err != nil {
				return nil, err
			}
			followErr = nil
			continue
		case err := <-oracleErr:
			if err != nil {
				return nil, fmt.Errorf("oracle: %w", err)
			}
			oracleErr = nil
			continue
		case now = <-tk.C:
		}
		t := now.Sub(start)
		if t >= tr.Duration() {
			break
		}
		if loaded && sc.LoadFor > 0 && t >= sc.LoadFor {
			b.load.Stop()
			loaded = false
		}
		up, down, err := b.link.Delivered()
		if err != nil {
			return nil, err
		}
		dt := now.Sub(lastAt).Seconds()
		p := tr.At(t)
		s := Sample{T: t, CapUp: float64(p.Up), CapDown: float64(p.Down),
			DelivUp: float64(up-lastUp) * 8 / dt, DelivDown: float64(down-lastDown) * 8 / dt, Loaded: loaded}
		s.RateUp, s.RateDown = ctl.rec.rates()
		lastUp, lastDown, lastAt = up, down, now
		rd.Timeline = append(rd.Timeline, s)
		if watch != nil {
			watch(s, ctl)
		}
	}
	end := time.Now()
	b.load.Stop()
	cancel()
	if svcDone != nil {
		if err := <-svcDone; err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
		ctl.rec.mu.Lock()
		rd.ChangesUp, rd.ChangesDown = ctl.rec.changes[sqm.DirEgress], ctl.rec.changes[sqm.DirIngress]
		ctl.rec.mu.Unlock()
	}
	for _, r := range b.prober.Results(start, end) {
		t := r.Sent.Sub(start)
		rd.Probes = append(rd.Probes, ProbeSample{T: t, Up: max(r.Up()-b.BaseUp, 0), Down: max(r.Down()-b.BaseDown, 0),
			Loaded: sc.LoadFor == 0 || t < sc.LoadFor})
	}
	// Probes still in flight at the end are not lost.
	rd.Sent = b.prober.Sent(start, end.Add(-time.Second))
	rd.Lost = max(rd.Sent-len(b.prober.Results(start, end.Add(-time.Second))), 0)
	rd.CPUBusy = cpuBusy(cpu0)
	return rd, nil
}

// followOracle sets the CAKE rates to share × the trace's capacity at each of its points.
func followOracle(ctx context.Context, tr traces.Trace, start time.Time, share float64, rec *recorder) error {
	return atPoints(ctx, tr, start, func(p traces.Point) error {
		if err := rec.SetRate(Uplink, sqm.DirEgress, uint64(share*float64(p.Up))); err != nil {
			return err
		}
		return rec.SetRate(Uplink, sqm.DirIngress, uint64(share*float64(p.Down)))
	})
}

// Figures are one contender's figures on one scenario and direction (see simlink.Figures;
// utilisation is measured as frames the modem sent over the trace's capacity).
type Figures struct {
	Direction string `json:"direction"`
	simlink.Figures
	LostProbes float64 `json:"probes_lost"` // share of probes without an answer in the run
	CPUBusy    float64 `json:"cpu_busy"`    // share of the VM's CPUs busy during the run
}

// Evaluate computes the figures of rd per direction with the simulated bench's definitions,
// so the two are comparable.
func Evaluate(sc Scenario, rd *RunData, scale float64) []Figures {
	tr := sc.Trace.Scaled(scale, 1)
	var out []Figures
	for _, up := range []bool{true, false} {
		name, capa := "download", func(t time.Duration) float64 { return float64(tr.At(t).Down) }
		if up {
			name, capa = "upload", func(t time.Duration) float64 { return float64(tr.At(t).Up) }
		}
		res := simResult(rd, up)
		ssc := simlink.Scenario{Config: simlink.Config{Name: sc.Trace.Name, Duration: rd.Duration, Capacity: capa},
			StepAt: sc.StepAt, IdleAt: sc.LoadFor}
		f := simlink.Evaluate(ssc, res)
		f.Controller = rd.Contender
		if sc.LoadFor > 0 && sc.LoadFor <= 5*time.Second {
			// The idle trace's load ends before simlink's 5 s warm-up: only its idle
			// figure means anything.
			f.P50AddedMs, f.P95AddedMs, f.P99AddedMs, f.Utilisation = -1, -1, -1, -1
		}
		lost := 0.0
		if rd.Sent > 0 {
			lost = math.Round(float64(rd.Lost)/float64(rd.Sent)*1000) / 1000
		}
		out = append(out, Figures{Direction: name, Figures: f, LostProbes: lost, CPUBusy: math.Round(rd.CPUBusy*1000) / 1000})
	}
	return out
}

// simResult converts one direction of rd to the simulated bench's result type, for Evaluate
// and the plots.
func simResult(rd *RunData, up bool) simlink.Result {
	var res simlink.Result
	var lastAdded time.Duration
	probes := append([]ProbeSample(nil), rd.Probes...)
	sort.Slice(probes, func(i, j int) bool { return probes[i].T < probes[j].T })
	pi := 0
	for _, s := range rd.Timeline {
		for pi < len(probes) && probes[pi].T <= s.T {
			lastAdded = probes[pi].Down
			if up {
				lastAdded = probes[pi].Up
			}
			pi++
		}
		p := simlink.Point{T: s.T, Capacity: s.CapDown, Rate: s.RateDown, Delivered: s.DelivDown, Added: lastAdded, Loaded: s.Loaded}
		if up {
			p.Capacity, p.Rate, p.Delivered = s.CapUp, s.RateUp, s.DelivUp
		}
		if p.Rate == 0 {
			p.Rate = math.Inf(1)
		}
		res.Timeline = append(res.Timeline, p)
	}
	for _, p := range probes {
		a := p.Down
		if up {
			a = p.Up
		}
		res.Probes = append(res.Probes, simlink.ProbeResult{Sent: p.T, Added: a, Loaded: p.Loaded})
	}
	res.RateChanges = rd.ChangesDown
	if up {
		res.RateChanges = rd.ChangesUp
	}
	return res
}

// SetScale changes Options.Scale for the runs that follow (after MeasureCapacity). The modem
// FIFO is scaled too, so that it holds as many milliseconds as at full rate.
func (b *Bench) SetScale(f float64) error {
	b.o.Scale = f
	return b.link.SetBuffer(uint32(float64(b.o.ModemBuffer) * f))
}

// PlotSeries turns the runs of sc into the simulated bench's plot input for one direction:
// the scenario (named "<trace>-upload" or "-download") and a series per contender that has
// a colour.
func PlotSeries(sc Scenario, runs []*RunData, scale float64, up bool, colors map[string]string) (simlink.Scenario, []simlink.Series) {
	tr := sc.Trace.Scaled(scale, 1)
	name, capa := sc.Trace.Name+"-download", func(t time.Duration) float64 { return float64(tr.At(t).Down) }
	if up {
		name, capa = sc.Trace.Name+"-upload", func(t time.Duration) float64 { return float64(tr.At(t).Up) }
	}
	ssc := simlink.Scenario{Config: simlink.Config{Name: name, Duration: tr.Duration(), Capacity: capa}, StepAt: sc.StepAt, IdleAt: sc.LoadFor}
	var series []simlink.Series
	for _, rd := range runs {
		if rd.Scenario != sc.Trace.Name || colors[rd.Contender] == "" {
			continue
		}
		series = append(series, simlink.Series{Name: rd.Contender, Color: colors[rd.Contender], Result: simResult(rd, up)})
	}
	return ssc, series
}

type cpuTimes struct{ busy, total uint64 }

// readCPU reads the all-CPU line of /proc/stat: under TCG the VM's own CPU can be the
// bottleneck, and the report should say when it was.
func readCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var c cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		c.total += n
		if i != 3 && i != 4 { // idle, iowait
			c.busy += n
		}
	}
	return c
}

func cpuBusy(from cpuTimes) float64 {
	to := readCPU()
	if to.total <= from.total {
		return 0
	}
	return float64(to.busy-from.busy) / float64(to.total-from.total)
}
