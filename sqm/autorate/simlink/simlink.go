// Package simlink is a deterministic, virtual-time model of an LTE uplink behind our CAKE
// shaper, for testing and comparing the autorate controllers in plain `go test`.
//
// It exists because the host kernel has neither CAKE nor netem, and because controller logic
// should be judged on exactly repeatable traces before the (slower, noisier) VM bench. Model,
// per 1 ms step:
//   - a saturating sender (when the load trace says so) fills our shaper, which passes
//     min(rate, line rate); CAKE's own queue is assumed short and, thanks to flow isolation,
//     invisible to the probe flow apart from one MTU of serialisation;
//   - the modem: a FIFO of Buffer bytes drained at the trace's capacity; when it is full the
//     sender is held to the capacity (a loss-based TCP keeps such a buffer full);
//   - probes every ProbeInterval in the same FIFO; their one-way delay is base + jitter +
//     exact FIFO wait, and their result reaches the controller ReturnDelay later;
//   - optionally a modem hint: the capacity HintLag ago, every second;
//   - with Config.Download, the other direction: the sender still follows our rate (TCP
//     obeys the ingress shaper's drops, idealised), but the byte counter reads what left the
//     FIFO and the probe's echo enters the FIFO an unloaded leg after the probe left the
//     router, as the download's one-way delay is measured.
//
// "Added latency" is the true FIFO wait plus the shaper's serialisation, measured per probe.
package simlink

import (
	"math"
	"math/rand"
	"sort"
	"time"

	"github.com/lifeline-router/lifeline/sqm/autorate"
)

// Trace gives the capacity (bit/s) at time t from the start.
type Trace func(t time.Duration) float64

// Config describes one simulated run.
type Config struct {
	Name          string
	Duration      time.Duration
	Capacity      Trace
	Loaded        func(t time.Duration) bool // nil = always saturating
	Buffer        float64                    // bytes of the modem's FIFO
	LineRate      float64                    // bit/s between router and modem
	BaseOWD       time.Duration
	ReturnDelay   time.Duration
	Jitter        time.Duration // σ of the probes' delay noise
	ProbeInterval time.Duration
	Tick          time.Duration // controller period (counters and samples)
	Hint          bool
	HintLag       time.Duration
	Seed          int64
	// Download models the other direction, shaped on the router's ingress: the probe's
	// request crosses the unloaded upload first (ReturnDelay) and the echo then waits in the
	// modem's FIFO, so SentAt is when the echo left the far end, ReceivedAt is its arrival,
	// and OldestPending counts from the request leaving the router (as the VM bench's and a
	// one-way prober's results are). The byte counter is what came out of the FIFO (rx
	// before the ingress shaper), not what went in.
	Download bool
}

// Defaults fills zero fields with an LTE-like set-up.
func (c Config) Defaults() Config {
	if c.Buffer == 0 {
		c.Buffer = 2 << 20 // 2 MiB: 1.7 s at 10 Mbit/s
	}
	if c.LineRate == 0 {
		c.LineRate = 1e9
	}
	if c.BaseOWD == 0 {
		c.BaseOWD = 20 * time.Millisecond
	}
	if c.ReturnDelay == 0 {
		c.ReturnDelay = 20 * time.Millisecond
	}
	if c.Jitter == 0 {
		c.Jitter = 2 * time.Millisecond
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = 20 * time.Millisecond
	}
	if c.Tick == 0 {
		c.Tick = 20 * time.Millisecond
	}
	if c.HintLag == 0 {
		c.HintLag = 500 * time.Millisecond
	}
	return c
}

// Point is one Tick of the timeline.
type Point struct {
	T         time.Duration
	Capacity  float64 // bit/s
	Rate      float64 // shaper rate, bit/s (+Inf when unshaped)
	Delivered float64 // bit/s out of the modem over the tick
	Added     time.Duration
	Loaded    bool
}

// ProbeResult is one probe's truth.
type ProbeResult struct {
	Sent   time.Duration
	Added  time.Duration
	Loaded bool
}

// Result is everything a run produced.
type Result struct {
	Timeline    []Point
	Probes      []ProbeResult
	RateChanges []time.Duration // when the controller changed its rate
}

type probe struct {
	issued time.Duration // left the router (the upload: = sent)
	sent   time.Duration
	mark   float64 // cumulative input bits at enqueue
	loaded bool
	added  time.Duration
	owd    time.Duration
	done   bool // left the FIFO
}

// Run simulates ctrl on cfg. It is deterministic for a given cfg.Seed.
func Run(cfg Config, ctrl autorate.Controller) Result {
	cfg = cfg.Defaults()
	rng := rand.New(rand.NewSource(cfg.Seed))
	epoch := time.Unix(1_700_000_000, 0)
	const step = time.Millisecond
	dt := step.Seconds()
	var (
		res           Result
		q             float64 // bits in FIFO
		cumIn, cumOut float64
		txBytes       float64
		probes        []*probe // not yet reported, in send order
		reports       []struct {
			at time.Duration
			s  autorate.DelaySample
		}
		rate      = float64(ctrl.Rate())
		nextProbe time.Duration
		nextTick  = cfg.Tick
		tickOut   float64
		lastAdded time.Duration
		hint      *autorate.ModemHint
	)
	shaperRate := func() float64 {
		if rate >= 1e18 {
			return math.Inf(1)
		}
		return rate
	}
	for t := time.Duration(0); t < cfg.Duration; t += step {
		capa := cfg.Capacity(t)
		loaded := cfg.Loaded == nil || cfg.Loaded(t)
		// Sender → shaper → FIFO.
		in := 0.0
		if loaded {
			in = min(shaperRate(), cfg.LineRate) * dt
		} else {
			in = min(64e3, shaperRate()) * dt // background chatter
		}
		space := cfg.Buffer*8 - q
		in = min(in, space+capa*dt)
		q += in
		cumIn += in
		if !cfg.Download {
			txBytes += in / 8
		}
		// Probes enter behind what is queued.
		if t >= nextProbe {
			nextProbe += cfg.ProbeInterval
			p := &probe{issued: t, sent: t, mark: cumIn, loaded: loaded}
			if cfg.Download {
				p.issued = t - cfg.ReturnDelay
			}
			probes = append(probes, p)
		}
		out := min(q, capa*dt)
		q -= out
		cumOut += out
		if cfg.Download {
			txBytes += out / 8
		}
		tickOut += out
		for _, p := range probes {
			if p.done || cumOut+1e-9 < p.mark {
				continue
			}
			p.done = true
			wait := t + step - p.sent
			ser := time.Duration(0)
			if r := shaperRate(); !math.IsInf(r, 1) {
				ser = time.Duration(1500 * 8 / r * float64(time.Second))
			}
			p.added = wait + ser
			noise := time.Duration(math.Abs(rng.NormFloat64()) * float64(cfg.Jitter))
			p.owd = cfg.BaseOWD + p.added + noise
			res.Probes = append(res.Probes, ProbeResult{Sent: p.sent, Added: p.added, Loaded: p.loaded})
			lastAdded = p.added
			r := autorate.DelaySample{SentAt: epoch.Add(p.sent), Delay: p.owd, ReceivedAt: epoch.Add(p.sent + p.owd + cfg.ReturnDelay)}
			if cfg.Download {
				r.ReceivedAt = epoch.Add(p.sent + p.owd)
				r.IssuedAt = epoch.Add(p.issued)
			}
			reports = append(reports, struct {
				at time.Duration
				s  autorate.DelaySample
			}{r.ReceivedAt.Sub(epoch), r})
		}
		if cfg.Hint && t%time.Second == 0 {
			hint = &autorate.ModemHint{Capacity: uint64(cfg.Capacity(max(0, t-cfg.HintLag)))}
		}
		if t+step >= nextTick {
			now := t + step
			nextTick += cfg.Tick
			sort.SliceStable(reports, func(i, j int) bool { return reports[i].at < reports[j].at })
			var got []autorate.DelaySample
			for len(reports) > 0 && reports[0].at <= now {
				got = append(got, reports[0].s)
				reports = reports[1:]
			}
			// Forget probes whose result has been delivered.
			keep := probes[:0]
			var oldest time.Duration
			back := cfg.ReturnDelay // from leaving the FIFO to the result at the router
			if cfg.Download {
				back = 0
				// The request of the next probe may be on its way to the far end already.
				if a := now - (nextProbe - cfg.ReturnDelay); a > 0 {
					oldest = a
				}
			}
			for _, p := range probes {
				if p.done && p.sent+p.owd+back <= now {
					continue
				}
				keep = append(keep, p)
				if a := now - p.issued; a > oldest {
					oldest = a
				}
			}
			probes = keep
			ctrl.Observe(autorate.Sample{
				At:            epoch.Add(now),
				TxBytes:       uint64(txBytes),
				Delays:        got,
				OldestPending: oldest,
				Hint:          hint,
			})
			if r := float64(ctrl.Rate()); r != rate {
				res.RateChanges = append(res.RateChanges, now)
				rate = r
			}
			res.Timeline = append(res.Timeline, Point{
				T: now, Capacity: capa, Rate: shaperRate(), Delivered: tickOut / cfg.Tick.Seconds(),
				Added: lastAdded, Loaded: loaded,
			})
			tickOut = 0
		}
	}
	return res
}

// Step is a capacity of a until at, b afterwards.
func Step(a, b float64, at time.Duration) Trace {
	return func(t time.Duration) float64 {
		if t < at {
			return a
		}
		return b
	}
}

// RandomWalk is a recorded-looking LTE trace: a log-space random walk between lo and hi,
// updated every 100 ms, with occasional jumps (handover, scheduler changes). Deterministic
// for a seed; precomputed so that lookups are cheap.
func RandomWalk(seed int64, lo, hi float64, d time.Duration) Trace {
	rng := rand.New(rand.NewSource(seed))
	n := int(d/(100*time.Millisecond)) + 1
	v := make([]float64, n)
	x := math.Log(math.Sqrt(lo * hi))
	for i := range v {
		x += rng.NormFloat64() * 0.04
		if rng.Float64() < 0.01 {
			x += (rng.Float64() - 0.5) * 1.2
		}
		x = min(max(x, math.Log(lo)), math.Log(hi))
		v[i] = math.Exp(x)
	}
	return func(t time.Duration) float64 {
		i := int(t / (100 * time.Millisecond))
		return v[min(max(i, 0), n-1)]
	}
}
