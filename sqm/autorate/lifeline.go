package autorate

import (
	"math"
	"sort"
	"time"
)

// LifelineConfig tunes the Lifeline controller. DefaultLifeline is what the simulated
// benchmark runs.
type LifelineConfig struct {
	Bounds
	// Target is the queueing delay we accept at the bottleneck; above it the rate follows the
	// capacity estimate down, below it the rate may grow.
	Target time.Duration
	// Congested is the delay (over baseline) that counts as bufferbloat for blind cuts.
	Congested time.Duration
	// Drain is how fast a standing queue should be emptied: the rate is set to
	// capacity × (1 − (queue − Target)/Drain), no lower than Floor × capacity.
	Drain time.Duration
	Floor float64
	// Headroom is the share of the estimated capacity we settle at after congestion.
	Headroom float64
	// Growth while loaded and uncongested: GrowMin per second right after congestion,
	// doubling every GrowDoubling, at most GrowMax per second (a cubic-like probe: careful near
	// the last capacity estimate, fast when it has clearly moved).
	GrowMin, GrowMax float64
	GrowDoubling     time.Duration
	// BlindCut multiplies the rate when probes stop coming back (stuck in a bloated buffer);
	// repeated at most every BlindEvery while it lasts.
	BlindCut   float64
	BlindEvery time.Duration
	// BlindAfter: a probe pending this long past the usual report age counts as stuck.
	BlindAfter time.Duration
	// ReportDrift is how fast (per second) the usual report age follows increases.
	ReportDrift float64
	// LoadedShare: the direction counts as loaded when it carries this share of the rate.
	LoadedShare float64
	// QueueMedianOf: the current queue is the median of this many latest samples (one late
	// packet is not a queue).
	QueueMedianOf int
	// QueueWindow: of those, only the ones sent within this time of the newest.
	QueueWindow time.Duration
	// MinChange: smaller relative changes are not applied (no churn of tc calls).
	MinChange float64
	// MTU is the largest frame (bytes) the shaper sends: a probe waits behind up to one of
	// them at our rate, a delay the shaper itself causes and no rate change removes. Target
	// and Congested are raised to 1.5 and 3 frame times when those are longer, so that at low
	// rates (12 ms per frame at 1 Mbit/s) the controller does not take its own serialisation
	// for a queue and spiral down to Min (seen on the real kernel, not in the FIFO model).
	MTU int
	// CountsOutput: Sample.TxBytes counts what left the bottleneck, not what entered it. So
	// it is on the ingress (the uplink's rx, before our shaper): while the modem's queue
	// stands, the counter reads the capacity itself, and the delay gradient must not be
	// taken off it again (r/(1 + dq/dt) would read 10 Mbit/s as 1.25 after an 80→10 step).
	CountsOutput bool
}

// DefaultLifeline returns the tuned defaults within b.
func DefaultLifeline(b Bounds) LifelineConfig {
	return LifelineConfig{
		Bounds:        b,
		Target:        4500 * time.Microsecond,
		Congested:     10 * time.Millisecond,
		Drain:         250 * time.Millisecond,
		Floor:         0.2,
		Headroom:      0.9,
		GrowMin:       0.03,
		GrowMax:       2.0,
		GrowDoubling:  200 * time.Millisecond,
		BlindCut:      0.1,
		BlindEvery:    40 * time.Millisecond,
		BlindAfter:    12 * time.Millisecond,
		ReportDrift:   0.02,
		LoadedShare:   0.8,
		MinChange:     0.005,
		QueueMedianOf: 4,
		QueueWindow:   70 * time.Millisecond,
		MTU:           1514,
	}
}

// DefaultLifelineDownload is DefaultLifeline for a direction shaped after its bottleneck:
// the ingress, whose counter (the uplink's rx) reads what left the modem's queue
// (CountsOutput). The other defaults hold for it (on the real kernel a higher Headroom, a
// higher Target or a faster GrowMin did not raise the share of capacity used, only the
// latency: the remote TCP's backoffs at our ingress shaper cost it, not the rate).
func DefaultLifelineDownload(b Bounds) LifelineConfig {
	c := DefaultLifeline(b)
	c.CountsOutput = true
	return c
}

// overtakeSlack: a pending probe counts as overtaken (lost) only when an answered one left
// this much later. Probes go out 20–50 ms apart; the slack absorbs the caller's clock
// reading the pending age a little after Sample.At.
const overtakeSlack = 5 * time.Millisecond

type qpoint struct {
	sent time.Time
	recv time.Time // when the result arrived (ReceivedAt, else the Sample's At)
	q    float64   // seconds of queueing delay over baseline
}

// Lifeline is our controller. What it does differently from cake-autorate:
//   - It estimates the bottleneck capacity from the delay gradient: with input rate r into a
//     FIFO of capacity C the queueing delay grows at r/C − 1, so C = r / (1 + dq/dt), with r
//     from the byte counter over the probes' send times. A drop from 80 to 10 Mbit/s is thus
//     answered with 10 Mbit/s in one step instead of a series of ×0.75 cuts.
//   - While a queue stands it sets capacity × (1 − (q − Target)/Drain): it drains the queue
//     it caused quickly and comes back up as the queue empties.
//   - Probes that do not come back (OldestPending) are a lower bound on the delay: it cuts
//     before the late samples arrive. It judges them against the usual report age measured
//     from DelaySample.ReceivedAt when the source sets it (exact, not rounded to the caller's
//     tick), which notices a stuck probe one tick sooner.
//   - It grows cubic-like (slow near the last capacity, doubling speed while no delay shows)
//     only while the direction is loaded, and never moves at idle. Real congestion restarts
//     the growth from its slowest; a small drain only slows it to a quarter.
//   - Its own serialisation (one frame at its rate) is not taken for a queue: Target and
//     Congested grow to 1.5 and 3 frame times at low rates (3 and 6 near Min).
//   - A modem hint caps the rate at 1.1 × the modem's capacity and lets a ramp jump to it.
//   - On the download it knows its counter is downstream of the modem's queue
//     (CountsOutput: the output while a queue stands is the capacity), and it judges a
//     pending probe by its age since it left the router (DelaySample.IssuedAt), not since
//     the far end echoed it. A pending probe that later ones overtook was lost, not stuck.
type Lifeline struct {
	cfg  LifelineConfig
	rate float64

	meter      rateMeter
	baseline   float64 // seconds
	haveBase   bool
	reportBase float64 // seconds: usual age of a probe when its result arrives
	haveReport bool
	hist       []qpoint
	capEst     float64 // bit/s, 0 = unknown
	lastCong   time.Time
	lastBlind  time.Time
	lastAt     time.Time
	hint       float64
	hintAt     time.Time
	newest     time.Time // latest IssuedAt (or SentAt) of an answered probe
	state      string
	last       LifelineInputs
}

// LifelineInputs are what the last decision was based on (for debug logs and benches).
type LifelineInputs struct {
	Queue     time.Duration // median queueing delay over baseline, -1 s before any sample
	Blind     time.Duration // oldest pending probe's age over the usual report age
	ReportAge time.Duration // the usual report age
	Target    time.Duration // Target and Congested after the frame-time correction
	Congested time.Duration
	Achieved  float64 // bit/s over the last 300 ms
	Loaded    bool
	CapEst    float64 // bit/s
	Samples   int     // delay samples in this Observe
}

// Inputs returns what the last decision was based on.
func (c *Lifeline) Inputs() LifelineInputs { return c.last }

// NewLifeline returns our controller starting at cfg.Base.
func NewLifeline(cfg LifelineConfig) *Lifeline {
	return &Lifeline{cfg: cfg, rate: float64(cfg.Base), meter: rateMeter{keep: 2 * time.Second}, state: "start"}
}

func (c *Lifeline) Rate() uint64 { return uint64(c.rate) }

// Config is the configuration the controller runs with.
func (c *Lifeline) Config() LifelineConfig { return c.cfg }

// State names what the controller did last (for lifeline status).
func (c *Lifeline) State() string { return c.state }

// CapacityEstimate is the last capacity derived from the delay gradient (bit/s, 0 unknown).
func (c *Lifeline) CapacityEstimate() uint64 { return uint64(c.capEst) }

func (c *Lifeline) Observe(s Sample) {
	cfg := &c.cfg
	dt := 0.0
	if !c.lastAt.IsZero() {
		dt = s.At.Sub(c.lastAt).Seconds()
	}
	c.lastAt = s.At
	c.meter.add(s.At, s.TxBytes)
	if s.Hint != nil && s.Hint.Capacity > 0 {
		c.hint, c.hintAt = float64(s.Hint.Capacity), s.At
	}

	for _, d := range s.Delays {
		v := d.Delay.Seconds()
		// Baseline: follows decreases at once, increases very slowly (route changes), as
		// cake-autorate does, but per second rather than per sample.
		if !c.haveBase || v < c.baseline {
			c.baseline, c.haveBase = v, true
		} else {
			c.baseline += (v - c.baseline) * min(1, 0.02*dt)
		}
		// The usual age of a result when it arrives, to judge OldestPending against. With
		// ReceivedAt it is exact; without, the caller's tick rounding inflates it.
		// Counted from when the probe left the router, as OldestPending is: for the
		// download's one-way delay SentAt is the far end's echo, an upload leg later.
		issued := d.SentAt
		if !d.IssuedAt.IsZero() {
			issued = d.IssuedAt
		}
		if issued.After(c.newest) {
			c.newest = issued
		}
		age := s.At.Sub(issued).Seconds()
		if !d.ReceivedAt.IsZero() && !d.ReceivedAt.Before(issued) {
			age = d.ReceivedAt.Sub(issued).Seconds()
		}
		if !c.haveReport || age < c.reportBase {
			c.reportBase, c.haveReport = age, true
		} else {
			c.reportBase += (age - c.reportBase) * min(1, cfg.ReportDrift*dt)
		}
		recv := s.At
		if !d.ReceivedAt.IsZero() {
			recv = d.ReceivedAt
		}
		c.hist = append(c.hist, qpoint{d.SentAt, recv, max(v-c.baseline, 0)})
	}
	// Keep half a second of history.
	cut := 0
	for cut < len(c.hist) && s.At.Sub(c.hist[cut].sent) > 500*time.Millisecond {
		cut++
	}
	c.hist = c.hist[cut:]

	achieved, haveRate := c.meter.rate(s.At.Add(-300*time.Millisecond), s.At)
	loaded := haveRate && achieved >= cfg.LoadedShare*c.rate

	// Current queue: median of the latest samples.
	q := -1.0
	if n := len(c.hist); n > 0 {
		k := max(cfg.QueueMedianOf, 1)
		last := make([]float64, 0, k)
		for i := n - 1; i >= max(0, n-k); i-- {
			// Only samples sent within QueueWindow of the newest: with sparse probes the
			// median of a fixed count would look too far back.
			if len(last) > 0 && cfg.QueueWindow > 0 && c.hist[n-1].sent.Sub(c.hist[i].sent) > cfg.QueueWindow {
				break
			}
			last = append(last, c.hist[i].q)
		}
		sort.Float64s(last)
		q = last[len(last)/2]
	}
	// Lower bound from a probe that has not come back.
	blind := 0.0
	if c.haveReport && s.OldestPending > 0 && !s.At.Add(-s.OldestPending).Before(c.newest.Add(-overtakeSlack)) {
		// Only a probe that no later one has overtaken can be stuck: queues keep the probe
		// flow in order, so an overtaken one was dropped (a full FIFO, CAKE, a lost radio
		// block). A source keeps it pending until it gives up (~2 s), and taking it for a
		// queue that long cut the rate to Min (seen on the real kernel: probes lost before a
		// run held both directions at their floor for its first 0.6 s).
		blind = s.OldestPending.Seconds() - c.reportBase
	}

	target, congested := cfg.Target.Seconds(), cfg.Congested.Seconds()
	if cfg.MTU > 0 && c.rate > 0 {
		frame := float64(cfg.MTU) * 8 / c.rate
		k := 1.5
		if c.rate < 1.5*float64(cfg.Min) {
			// Near the floor a drain cannot lower the rate much anyway, and on the real
			// kernel a probe through CAKE's ingress waits behind up to two frames: allow
			// that, or a direction cut to Min never grows out of it.
			k = 3
		}
		target, congested = max(target, k*frame), max(congested, 2*k*frame)
	}
	sec := func(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
	c.last = LifelineInputs{Queue: sec(q), Blind: sec(blind), ReportAge: sec(c.reportBase), Target: sec(target),
		Congested: sec(congested), Achieved: achieved, Loaded: loaded, Samples: len(s.Delays)}
	defer func() { c.last.CapEst = c.capEst }()
	newRate := c.rate
	switch {
	case blind > cfg.BlindAfter.Seconds() && blind > q:
		// Probes are stuck: the buffer is filling faster than we can measure. Cut hard now,
		// repeat while it lasts; the late samples will tell the real capacity.
		c.lastCong = s.At
		if s.At.Sub(c.lastBlind) >= cfg.BlindEvery {
			newRate = c.rate * cfg.BlindCut
			c.lastBlind = s.At
		}
		c.state = "blind-cut"
	case q > target && (loaded || q > congested):
		if est, ok := c.gradientCapacity(); ok {
			c.capEst = est
		} else if c.capEst == 0 && haveRate {
			c.capEst = achieved
		}
		if c.capEst > 0 {
			f := 1 - (q-target)/cfg.Drain.Seconds()
			if q > congested {
				f = min(f, cfg.Headroom) // real congestion: settle below the estimate
			}
			newRate = c.capEst * min(max(f, cfg.Floor), 1)
			c.state = "drain"
		}
		// Real congestion restarts the growth from its slowest; a small queue (or a jitter
		// spike taken for one) only slows it to a quarter, so that a ramp to a much higher
		// capacity is not set back to the start by one noisy sample.
		switch {
		case q > congested || c.lastCong.IsZero():
			c.lastCong = s.At
		case newRate < c.rate:
			since := max(s.At.Sub(c.lastCong)-2*cfg.GrowDoubling, 0)
			c.lastCong = s.At.Add(-since)
		}
	case loaded:
		// Grow: slow just after congestion, doubling speed while none shows.
		since := s.At.Sub(c.lastCong).Seconds()
		if c.lastCong.IsZero() {
			since = 10
		}
		g := min(cfg.GrowMin*math.Exp2(since/cfg.GrowDoubling.Seconds()), cfg.GrowMax)
		newRate = c.rate * (1 + g*dt)
		if c.capEst > 0 && c.rate < cfg.Headroom*c.capEst && since < 1 && !c.newest.Before(c.lastBlind) {
			// Coming back from a drain: return to the settled rate at once. Not after a
			// blind cut before a probe sent since has come back: the estimate is from before
			// whatever made the probes stick. (Seen on the real kernel once the download
			// worked: after 80→10 in both directions the stuck probe was rightly blamed on
			// the download the tick after the upload's blind cut, and the upload went
			// straight back to 0.9 × its old 88 Mbit/s.)
			newRate = max(newRate, cfg.Headroom*c.capEst)
		}
		if c.hint > 0 && s.At.Sub(c.hintAt) < 2*time.Second && newRate < 0.9*c.hint {
			newRate = 0.9 * c.hint
		}
		c.state = "grow"
	default:
		c.state = "hold"
	}
	if c.hint > 0 && s.At.Sub(c.hintAt) < 2*time.Second {
		newRate = min(newRate, 1.1*c.hint)
	}
	newRate = cfg.clamp(newRate)
	if newRate > c.rate || math.Abs(newRate-c.rate) >= cfg.MinChange*c.rate {
		c.rate = newRate
	}
}

// gradientCapacity fits the queueing delay over send time (least squares on the last
// 300 ms of samples) and returns input rate / (1 + slope).
func (c *Lifeline) gradientCapacity() (float64, bool) {
	n := len(c.hist)
	if n < 3 {
		return 0, false
	}
	newest := c.hist[n-1].sent
	i0 := n - 1
	for i0 > 0 && newest.Sub(c.hist[i0-1].sent) <= 300*time.Millisecond {
		i0--
	}
	pts := c.hist[i0:]
	if len(pts) < 3 || newest.Sub(pts[0].sent) < 80*time.Millisecond {
		return 0, false
	}
	var sx, sy, sxx, sxy float64
	for _, p := range pts {
		x := p.sent.Sub(pts[0].sent).Seconds()
		sx += x
		sy += p.q
		sxx += x * x
		sxy += x * p.q
	}
	k := float64(len(pts))
	den := k*sxx - sx*sx
	if den <= 0 {
		return 0, false
	}
	slope := (k*sxy - sx*sy) / den
	if c.cfg.CountsOutput {
		// The queue's output while it stands is the capacity (also while it drains), and
		// the counter sees it when the probes that saw the queue arrive, not when the far
		// end sent them (that window starts before the queue did).
		out, ok := c.meter.rate(pts[0].recv, c.hist[n-1].recv)
		return out, ok && out > 0
	}
	in, ok := c.meter.rate(pts[0].sent, newest)
	if !ok || in <= 0 {
		return 0, false
	}
	if slope < -0.95 {
		slope = -0.95
	}
	return in / (1 + slope), true
}
