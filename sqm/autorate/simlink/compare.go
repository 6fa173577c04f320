package simlink

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/lifeline-router/lifeline/sqm/autorate"
)

// Figures are one controller's results on one scenario. Durations are in seconds, latency
// in milliseconds; -1 means "not applicable to this scenario".
type Figures struct {
	Controller  string  `json:"controller"`
	Scenario    string  `json:"scenario"`
	P50AddedMs  float64 `json:"p50_added_latency_ms"`
	P95AddedMs  float64 `json:"p95_added_latency_ms"`
	P99AddedMs  float64 `json:"p99_added_latency_ms"`
	Utilisation float64 `json:"capacity_used"`
	RecoveryS   float64 `json:"recovery_s"`
	RampS       float64 `json:"ramp_s"`
	// RateRampS is when the controller's rate first reached 90 % of the new capacity after
	// the 20→80 step: RampS less the sender's own ramp (TCP's cwnd growth on the real
	// kernel; none in the model, whose sender follows the rate at once).
	RateRampS         float64 `json:"rate_ramp_s"`
	IdleChangesPerMin float64 `json:"idle_rate_changes_per_min"`
}

// Report is what `make bench` writes to build/bench/autorate.json.
type Report struct {
	Kind    string    `json:"kind"`
	Note    string    `json:"note"`
	Goal    string    `json:"goal"`
	Bounds  []uint64  `json:"bounds_bps"` // min, base, max
	Results []Figures `json:"results"`
	Plots   []string  `json:"plots,omitempty"` // SVG files next to the JSON (WriteBench)
}

// Scenario is a named Config plus the instant of its step, if any.
type Scenario struct {
	Config
	StepAt time.Duration // 0 = no step
	IdleAt time.Duration // load stops here, 0 = never
}

const (
	warmup    = 5 * time.Second
	idleGrace = time.Second
)

// Scenarios are the traces of issue 4: the two steps, a random walk and an idle period, on
// the upload, then the same on the download (names ending in "-download", Config.Download).
func Scenarios(seed int64) []Scenario {
	up := []Scenario{
		{Config: Config{Name: "step-80-to-10", Duration: 30 * time.Second, Capacity: Step(80e6, 10e6, 15*time.Second), Seed: seed}, StepAt: 15 * time.Second},
		{Config: Config{Name: "step-20-to-80", Duration: 30 * time.Second, Capacity: Step(20e6, 80e6, 15*time.Second), Seed: seed}, StepAt: 15 * time.Second},
		{Config: Config{Name: "random-walk-5-80", Duration: 180 * time.Second, Capacity: RandomWalk(seed, 5e6, 80e6, 180*time.Second), Seed: seed}},
		{Config: Config{Name: "idle-after-load", Duration: 70 * time.Second, Capacity: Step(40e6, 40e6, 0), Seed: seed,
			Loaded: func(t time.Duration) bool { return t < 10*time.Second }}, IdleAt: 10 * time.Second},
	}
	out := up
	for _, sc := range up {
		sc.Name += "-download"
		sc.Download = true
		out = append(out, sc)
	}
	return out
}

// Contender is a named controller factory (a fresh controller per run, for the upload or
// for the download: sqm.Service configures ours per direction).
type Contender struct {
	Name string
	New  func(download bool) autorate.Controller
}

// Contenders are the four of the issue: no shaping, the seed's fixed 20 Mbit/s,
// cake-autorate's rules and ours, all within b.
func Contenders(b autorate.Bounds) []Contender {
	return []Contender{
		{"none", func(bool) autorate.Controller { return autorate.Unlimited }},
		{"fixed-20mbit", func(bool) autorate.Controller { return autorate.Fixed(20e6) }},
		{"cake-autorate", func(bool) autorate.Controller { return autorate.NewBaseline(autorate.DefaultBaseline(b)) }},
		{"lifeline", func(download bool) autorate.Controller { return autorate.NewLifeline(LifelineFor(b, download)) }},
	}
}

// LifelineFor is our controller's configuration for one direction, as sqm.Service sets it:
// on the download the byte counter is downstream of the modem's queue.
func LifelineFor(b autorate.Bounds, download bool) autorate.LifelineConfig {
	if download {
		return autorate.DefaultLifelineDownload(b)
	}
	return autorate.DefaultLifeline(b)
}

// DefaultBounds: cake-autorate's default download min/base/max except a 2 Mbit/s floor
// (LTE at the cell edge goes below its 5 Mbit/s default min).
var DefaultBounds = autorate.Bounds{Min: 2e6, Base: 20e6, Max: 80e6}

// Evaluate computes the figures of one run.
func Evaluate(sc Scenario, res Result) Figures {
	f := Figures{Scenario: sc.Name, RecoveryS: -1, RampS: -1, RateRampS: -1, IdleChangesPerMin: -1}
	var added []float64
	for _, p := range res.Probes {
		if p.Loaded && p.Sent >= warmup {
			added = append(added, float64(p.Added)/float64(time.Millisecond))
		}
	}
	sort.Float64s(added)
	f.P50AddedMs, f.P95AddedMs, f.P99AddedMs = pct(added, 0.50), pct(added, 0.95), pct(added, 0.99)
	var got, capa float64
	for _, p := range res.Timeline {
		if p.Loaded && p.T >= warmup {
			got += p.Delivered
			capa += p.Capacity
		}
	}
	if capa > 0 {
		f.Utilisation = round3(got / capa)
	}
	if sc.StepAt > 0 {
		before, after := sc.Capacity(sc.StepAt-time.Millisecond), sc.Capacity(sc.StepAt)
		if after < before {
			f.RecoveryS = 0
			for _, p := range res.Probes {
				if p.Sent >= sc.StepAt && p.Sent < sc.StepAt+10*time.Second && p.Added >= 30*time.Millisecond {
					f.RecoveryS = round3((p.Sent + p.Added - sc.StepAt).Seconds())
				}
			}
		} else {
			f.RampS = (sc.Duration - sc.StepAt).Seconds() // not reached
			f.RateRampS = f.RampS
			for _, p := range res.Timeline {
				if p.T >= sc.StepAt && p.Rate >= 0.9*after {
					f.RateRampS = round3((p.T - sc.StepAt).Seconds())
					break
				}
			}
			const win = 4 // ticks averaged (200 ms)
			for i := win - 1; i < len(res.Timeline); i++ {
				p := res.Timeline[i]
				if p.T < sc.StepAt {
					continue
				}
				sum := 0.0
				for j := i - win + 1; j <= i; j++ {
					sum += res.Timeline[j].Delivered
				}
				if sum/win >= 0.9*after {
					f.RampS = round3((p.T - sc.StepAt).Seconds())
					break
				}
			}
		}
	}
	if sc.IdleAt > 0 {
		// Counted from 1 s after the load stops: the last second of load is still in the
		// controllers' achieved-rate window, and changes then are the end of the load.
		n := 0
		for _, t := range res.RateChanges {
			if t >= sc.IdleAt+idleGrace {
				n++
			}
		}
		f.IdleChangesPerMin = round3(float64(n) / (sc.Duration - sc.IdleAt - idleGrace).Minutes())
	}
	return f
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return round3(sorted[min(max(i, 0), len(sorted)-1)])
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// RunComparison runs every contender on every scenario of seed.
func RunComparison(seed int64, b autorate.Bounds) Report {
	r := Report{
		Kind: "simulated",
		Note: "simlink: deterministic virtual-time model (1 ms steps) of a saturating upload through our shaper " +
			"into a 2 MiB modem FIFO, and of a download through the modem's FIFO into our ingress shaper (scenarios *-download); " +
			"not the real-kernel bench (that runs under qemu with CAKE)",
		Goal:   "p95 added latency <= 15 ms at >= 90% capacity used, recovery <= 1 s (80->10), ramp <= 2 s (20->80), 0 rate changes/min at idle (from 1 s after the load stops)",
		Bounds: []uint64{b.Min, b.Base, b.Max},
	}
	for _, sc := range Scenarios(seed) {
		for _, c := range Contenders(b) {
			f := Evaluate(sc, Run(sc.Config, c.New(sc.Download)))
			f.Controller = c.Name
			r.Results = append(r.Results, f)
		}
	}
	return r
}

// WriteJSON writes the report, creating the directory.
func (r Report) WriteJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("MkdirAll(%s): %w", filepath.Dir(path), err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("WriteFile(%s): %w", path, err)
	}
	return nil
}
