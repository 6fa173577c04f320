package simlink

import (
	"os"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/sqm/autorate"
)

func figures(t *testing.T, seed int64, scenario, controller string) Figures {
	t.Helper()
	for _, sc := range Scenarios(seed) {
		if sc.Name != scenario {
			continue
		}
		for _, c := range Contenders(DefaultBounds) {
			if c.Name == controller {
				f := Evaluate(sc, Run(sc.Config, c.New(sc.Download)))
				f.Controller = c.Name
				return f
			}
		}
	}
	t.Fatalf("no scenario %q / controller %q", scenario, controller)
	return Figures{}
}

var seeds = []int64{1, 2, 3}

// The model itself: an unshaped saturating sender fills the whole buffer, a fixed rate below
// capacity adds nothing and uses only its share.
func TestModelSanity(t *testing.T) {
	none := figures(t, 1, "idle-after-load", "none")
	// 2 MiB at 40 Mbit/s is 419 ms of queue.
	if none.P50AddedMs < 400 || none.P50AddedMs > 440 || none.Utilisation < 0.99 {
		t.Errorf("unshaped: %+v, want ≈419 ms added and full use", none)
	}
	fixed := figures(t, 1, "idle-after-load", "fixed-20mbit")
	if fixed.P95AddedMs > 2 || fixed.Utilisation < 0.49 || fixed.Utilisation > 0.51 {
		t.Errorf("fixed 20 Mbit/s on 40: %+v, want ~0 added and 50%% use", fixed)
	}
	// Determinism: the same seed gives the same figures.
	if a, b := figures(t, 2, "random-walk-5-80", "lifeline"), figures(t, 2, "random-walk-5-80", "lifeline"); a != b {
		t.Errorf("not deterministic: %+v vs %+v", a, b)
	}
}

func TestBaselineMatchesPublishedBehaviour(t *testing.T) {
	// cake-autorate needs seconds to follow steps (the issue quotes ~2.5 s and ~7 s on real
	// links); on our model it must at least be much slower than 1 s / 2 s, or the model is
	// too kind to it.
	for _, seed := range seeds {
		down := figures(t, seed, "step-80-to-10", "cake-autorate")
		up := figures(t, seed, "step-20-to-80", "cake-autorate")
		if down.RecoveryS < 2 || up.RampS < 4 {
			t.Errorf("seed %d: cake-autorate recovery %.2fs ramp %.2fs: suspiciously fast", seed, down.RecoveryS, up.RampS)
		}
		idle := figures(t, seed, "idle-after-load", "cake-autorate")
		if idle.IdleChangesPerMin == 0 {
			t.Errorf("seed %d: cake-autorate should drift back towards its base rate when idle", seed)
		}
	}
}

// The goals of issue 4 on the simulated link. Where we do not meet a goal yet, the bound
// asserted is the figure we reach (with a margin) and the goal is in the comment, so a
// regression still fails; see the package README figures.
func TestLifelineGoals(t *testing.T) {
	// The upload, and the download (probes' echo through the modem's FIFO, counter after it).
	for _, dir := range []string{"", "-download"} {
		for _, seed := range seeds {
			down := figures(t, seed, "step-80-to-10"+dir, "lifeline")
			base := figures(t, seed, "step-80-to-10"+dir, "cake-autorate")
			// Goal ≤ 1 s; we reach 0.81 s on the upload, 0.61 s on the download.
			if down.RecoveryS > 1 || down.RecoveryS >= base.RecoveryS/3 {
				t.Errorf("seed %d%s: recovery after 80→10 %.2fs (cake-autorate %.2fs)", seed, dir, down.RecoveryS, base.RecoveryS)
			}
			up := figures(t, seed, "step-20-to-80"+dir, "lifeline")
			if up.RampS > 2 {
				t.Errorf("seed %d%s: ramp 20→80 to 90%% took %.2fs, goal ≤ 2s", seed, dir, up.RampS)
			}
			if up.P95AddedMs > 15 || up.Utilisation < 0.9 {
				t.Errorf("seed %d%s: step-up p95 %.1fms at %.3f used, goal ≤ 15ms at ≥ 0.9", seed, dir, up.P95AddedMs, up.Utilisation)
			}
			rw := figures(t, seed, "random-walk-5-80"+dir, "lifeline")
			rwBase := figures(t, seed, "random-walk-5-80"+dir, "cake-autorate")
			// Goal p95 ≤ 15 ms at ≥ 90 %.
			if rw.Utilisation < 0.9 || rw.P95AddedMs > 15 || rw.P95AddedMs >= rwBase.P95AddedMs/2 {
				t.Errorf("seed %d%s: random walk p95 %.1fms at %.3f used (cake-autorate %.1fms at %.3f)", seed, dir, rw.P95AddedMs, rw.Utilisation, rwBase.P95AddedMs, rwBase.Utilisation)
			}
			idle := figures(t, seed, "idle-after-load"+dir, "lifeline")
			if idle.IdleChangesPerMin != 0 {
				t.Errorf("seed %d%s: %.1f rate changes/min at idle, goal 0", seed, dir, idle.IdleChangesPerMin)
			}
			if idle.P95AddedMs > 15 || idle.Utilisation < 0.9 {
				t.Errorf("seed %d%s: constant 40 Mbit/s: p95 %.1fms at %.3f used", seed, dir, idle.P95AddedMs, idle.Utilisation)
			}
		}
	}
}

// The download's mechanism on the real kernel, in the model: its one-way delay is measured
// from the far end's echo, an unloaded upload leg after the probe left the router. Judged as
// if the probe had left at the echo (no DelaySample.IssuedAt), every probe in flight looks
// stuck and blind cuts hold the download at its floor: the model must show that, or it could
// not catch the bug again.
func TestDownloadProbeAgeMatters(t *testing.T) {
	var sc Scenario
	for _, s := range Scenarios(1) {
		if s.Name == "random-walk-5-80-download" {
			sc = s
		}
	}
	ok := Evaluate(sc, Run(sc.Config, autorate.NewLifeline(LifelineFor(DefaultBounds, true))))
	bad := Evaluate(sc, Run(sc.Config, dropIssued{autorate.NewLifeline(LifelineFor(DefaultBounds, true))}))
	if ok.Utilisation < 0.9 || bad.Utilisation > 0.5 {
		t.Errorf("download random walk: %.3f of capacity used with IssuedAt, %.3f without; want ≥ 0.9 and the bug's collapse (≤ 0.5)",
			ok.Utilisation, bad.Utilisation)
	}
}

// dropIssued feeds a controller the download's samples without IssuedAt (the old contract).
type dropIssued struct{ autorate.Controller }

func (d dropIssued) Observe(s autorate.Sample) {
	ds := append([]autorate.DelaySample(nil), s.Delays...)
	for i := range ds {
		ds[i].IssuedAt = time.Time{}
	}
	s.Delays = ds
	d.Controller.Observe(s)
}

func TestModemHintHelpsRecovery(t *testing.T) {
	sc := Scenarios(1)[0]
	sc.Hint, sc.HintLag = true, 200*time.Millisecond
	with := Evaluate(sc, Run(sc.Config, autorate.NewLifeline(autorate.DefaultLifeline(DefaultBounds))))
	without := figures(t, 1, "step-80-to-10", "lifeline")
	if with.RecoveryS > without.RecoveryS {
		t.Errorf("hint made recovery worse: %.2fs vs %.2fs", with.RecoveryS, without.RecoveryS)
	}
}

// TestWriteBenchReport is the hook for `make bench`:
// AUTORATE_BENCH_OUT=build/bench/autorate.json go test -run TestWriteBenchReport ./sqm/autorate/simlink/
func TestWriteBenchReport(t *testing.T) {
	out := os.Getenv("AUTORATE_BENCH_OUT")
	if out == "" {
		t.Skip("set AUTORATE_BENCH_OUT=path to write the simulated comparison")
	}
	if err := RunComparison(1, DefaultBounds).WriteJSON(out); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSimulatedRandomWalk(b *testing.B) {
	sc := Scenarios(1)[2]
	for i := 0; i < b.N; i++ {
		Run(sc.Config, autorate.NewLifeline(autorate.DefaultLifeline(DefaultBounds)))
	}
}
