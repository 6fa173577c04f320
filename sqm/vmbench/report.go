package vmbench

import (
	"context"
	"fmt"
	"time"

	"github.com/lifeline-router/lifeline/lab/traces"
)

// Report is what cmd/autorate-vmbench writes to build/bench/autorate-vm.json.
type Report struct {
	Kind   string `json:"kind"`
	Note   string `json:"note"`
	Goal   string `json:"goal"`
	Kernel string `json:"kernel"`
	// Clock is "virtual" (TCG with -icount: guest time independent of host load, see
	// VirtualClockQEMU) or "real".
	Clock string `json:"clock"`
	// VMCapacity is what the VM carried unshaped (bit/s, both directions at once): the
	// traces are scaled by Scale when it is not well above their 80 Mbit/s.
	VMCapacityUp   float64 `json:"vm_capacity_up_bps"`
	VMCapacityDown float64 `json:"vm_capacity_down_bps"`
	Scale          float64 `json:"scale"`

	ModemBuffer   uint32   `json:"modem_buffer_bytes"`
	BaseOWDMs     float64  `json:"base_owd_ms"`
	IdleOWDUpMs   float64  `json:"idle_owd_up_ms"`
	IdleOWDDownMs float64  `json:"idle_owd_down_ms"`
	ProbeInterval float64  `json:"probe_interval_ms"`
	Flows         int      `json:"tcp_flows_per_direction"`
	Bounds        []uint64 `json:"bounds_bps"`
	WallSeconds   float64  `json:"wall_s"`

	Results      []Figures    `json:"results"`
	SeedExercise []SeedResult `json:"seed_exercise"`
	SeedNote     string       `json:"seed_exercise_note"`
	Plots        []string     `json:"plots,omitempty"`

	// Runs carry the timelines from the guest to the host for the plots; not written to the
	// JSON file.
	Runs []*RunData `json:"runs,omitempty"`
}

// MeasureCapacity runs saturating TCP both ways through the modem set to ceiling (bit/s, no
// shaper on the router) for d and returns what arrived, bit/s per direction.
func (b *Bench) MeasureCapacity(ctx context.Context, d time.Duration, ceiling uint64) (up, down float64, err error) {
	if err := b.link.Set(traces.Point{Up: ceiling, Down: ceiling}); err != nil {
		return 0, 0, err
	}
	if err := b.load.Start(b.o.Flows, b.o.Flows); err != nil {
		return 0, 0, err
	}
	defer b.load.Stop()
	time.Sleep(time.Second) // slow start
	u0, d0, err := b.link.Delivered()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(d):
	}
	u1, d1, err := b.link.Delivered()
	if err != nil {
		return 0, 0, err
	}
	s := time.Since(t0).Seconds()
	return float64(u1-u0) * 8 / s, float64(d1-d0) * 8 / s, nil
}

// RunAll runs every contender on every scenario, then the seed's exercise, and returns the
// report with the runs' timelines.
func (b *Bench) RunAll(ctx context.Context, scs []Scenario, seedDur time.Duration) (*Report, error) {
	o := b.o
	r := &Report{
		Kind: "kernel",
		Note: "real kernel (board kernel under qemu): saturating TCP both ways (CUBIC) through CAKE on the router's wwan0 and ifb-wwan0 " +
			"(sqm.Service, probes fed as the product feeds them), into a modem namespace whose tbf follows the trace with a deep byte FIFO; " +
			"added latency = one-way probe delay over the idle link's; contenders run one after the other on the same trace",
		Goal:        "p95 added latency <= 15 ms at >= 90% capacity used, recovery <= 1 s (80->10), ramp <= 2 s (20->80), 0 rate changes/min at idle (from 1 s after the load stops)",
		Scale:       o.Scale,
		ModemBuffer: uint32(float64(o.ModemBuffer) * o.Scale), BaseOWDMs: ms(o.BaseOWD), ProbeInterval: ms(o.ProbeInterval), Flows: o.Flows,
		IdleOWDUpMs: ms(b.BaseUp), IdleOWDDownMs: ms(b.BaseDown),
		Bounds: []uint64{min(Bounds.Min, uint64(float64(Bounds.Base)*o.Scale)), uint64(float64(Bounds.Base) * o.Scale), uint64(float64(Bounds.Max) * o.Scale)},
		SeedNote: "seed exercise 82.10.1 read as: an LTE upload of 5 Mbit/s capacity (20 down, not scaled, same modem FIFO) saturated by TCP, " +
			"probe round trip per qdisc on wwan0's egress",
	}
	for _, sc := range scs {
		for _, c := range Contenders(o.Scale) {
			if !o.runs(c.Name) {
				continue
			}
			o.Logf("run %s on %s (%v)", c.Name, sc.Trace.Name, sc.Trace.Duration())
			rd, err := b.Run(ctx, sc, c, nil)
			if err != nil {
				return r, fmt.Errorf("run %s on %s: %w", c.Name, sc.Trace.Name, err)
			}
			r.Runs = append(r.Runs, rd)
			for _, f := range Evaluate(sc, rd, o.Scale) {
				r.Results = append(r.Results, f)
				o.Logf("  %s %s: p50 %.1f p95 %.1f p99 %.1f ms, used %.3f, recovery %.2f s, ramp %.2f s (rate %.2f s), idle changes %.1f/min, lost %.3f, cpu %.2f",
					f.Controller, f.Direction, f.P50AddedMs, f.P95AddedMs, f.P99AddedMs, f.Utilisation, f.RecoveryS, f.RampS, f.RateRampS, f.IdleChangesPerMin, f.LostProbes, f.CPUBusy)
			}
		}
	}
	if seedDur > 0 {
		var err error
		if r.SeedExercise, err = b.SeedExercise(ctx, seedDur, 2*time.Second); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (o Options) runs(contender string) bool {
	if len(o.Contenders) == 0 {
		return true
	}
	for _, n := range o.Contenders {
		if n == contender {
			return true
		}
	}
	return false
}
