package vmbench

import (
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/lab/traces"
	"github.com/lifeline-router/lifeline/vmtest"
)

// TestVMLinkFollowsTrace is the short version of the real-kernel bench, in the VM stage: the
// modem's tbf follows a 40 → 8 Mbit/s step (read back from the kernel during the run), the
// link carries the load, and our controller, driving real CAKE on wwan0 and ifb-wwan0 through
// sqm.Service, cuts both rates after the step.
func TestVMLinkFollowsTrace(t *testing.T) {
	if !vmtest.InVM() {
		// A virtual clock: the figures this test checks must not depend on how busy the host is.
		q, err := VirtualClockQEMU(t.TempDir(), 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("QEMU", q)
		vmtest.GoTest(t, vmtest.GoTestOptions{Tools: []string{"/usr/sbin/tc", "/bin/ip"}, Timeout: 8 * time.Minute})
		return
	}
	b, err := NewBench(Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	const step = 4 * time.Second
	tr := traces.Trace{Name: "short-step", Points: []traces.Point{{At: 0, Up: 40e6, Down: 40e6}, {At: step, Up: 8e6, Down: 8e6}, {At: 9 * time.Second, Up: 8e6, Down: 8e6}}}
	sc := Scenario{Trace: tr, StepAt: step}
	var (
		mismatches, checked int
		peakUp, peakDown    float64 // controller rates before the step
		lowUp, lowDown      = 1e18, 1e18
		cakeChecked         bool
		deliveredBefore     []float64
	)
	near := func(d time.Duration) bool { return d > step-200*time.Millisecond && d < step+200*time.Millisecond }
	watch := func(s Sample, c *Controlled) {
		if s.T%(500*time.Millisecond) < 50*time.Millisecond {
			for _, st := range c.Status() {
				t.Logf("%5.2fs %s: %s rate %.1f Mbit/s, capacity estimate %.1f, achieved %.1f, backlog %d B, drops %d",
					s.T.Seconds(), st.Direction, st.State, float64(st.RateBps)/1e6, float64(st.CapacityEstimate)/1e6, st.AchievedBps/1e6, st.BacklogBytes, st.Drops)
			}
		}
		if !near(s.T) {
			up, down, err := b.Link().KernelRates()
			if err != nil {
				t.Error(err)
				return
			}
			checked++
			if want := tr.At(s.T); up != want.Up || down != want.Down {
				mismatches++
				t.Logf("at %v: modem tbf up %d down %d, trace %d/%d", s.T, up, down, want.Up, want.Down)
			}
		}
		switch {
		case s.T > time.Second && s.T < step:
			peakUp, peakDown = max(peakUp, s.RateUp), max(peakDown, s.RateDown)
			deliveredBefore = append(deliveredBefore, s.DelivUp+s.DelivDown)
		case s.T >= step && s.T < step+3*time.Second:
			lowUp, lowDown = min(lowUp, s.RateUp), min(lowDown, s.RateDown)
		case s.T > step+3*time.Second && !cakeChecked:
			// The rate the Service applied is the one in the kernel.
			cakeChecked = true
			before, _ := c.Rates()
			out, err := exec.Command("tc", "-n", b.Topology().RT, "-j", "qdisc", "show", "dev", Uplink, "root").CombinedOutput()
			if err != nil {
				t.Errorf("tc qdisc show: %v\n%s", err, out)
				return
			}
			var qs []struct {
				Kind    string         `json:"kind"`
				Options map[string]any `json:"options"`
			}
			if err := json.Unmarshal(out, &qs); err != nil || len(qs) == 0 || qs[0].Kind != "cake" {
				t.Errorf("tc -j qdisc show dev %s root: %v %s", Uplink, err, out)
				return
			}
			// The Service may apply a new rate between the two reads: either is fine.
			bw, _ := qs[0].Options["bandwidth"].(float64)
			// The kernel keeps bytes/s.
			near := func(a, b float64) bool { return a > b-16 && a < b+16 }
			if up, _ := c.Rates(); !near(bw*8, before) && !near(bw*8, up) {
				t.Errorf("cake on %s: %v bit/s in the kernel, the Service applied %v", Uplink, bw*8, up)
			}
		}
	}
	rd, err := b.Run(context.Background(), sc, Contenders(1)[3], watch)
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 || mismatches > 0 {
		t.Errorf("modem rate differed from the trace in %d of %d samples", mismatches, checked)
	}
	sum := 0.0
	for _, d := range deliveredBefore {
		sum += d
	}
	if n := float64(len(deliveredBefore)); n == 0 || sum/n < 0.5*2*40e6 {
		t.Errorf("before the step the modem carried %.1f Mbit/s (up+down), want at least half of 80", sum/max(n, 1)/1e6)
	}
	t.Logf("controller before the step: up %.1f down %.1f Mbit/s; lowest within 3 s after: up %.1f down %.1f", peakUp/1e6, peakDown/1e6, lowUp/1e6, lowDown/1e6)
	if peakUp == 0 || lowUp > 12e6 || lowUp >= peakUp {
		t.Errorf("upload: controller did not cut towards 8 Mbit/s after the step (before %.1f, lowest after %.1f Mbit/s)", peakUp/1e6, lowUp/1e6)
	}
	// The download too: before the step it must have grown well above the new capacity (it
	// used to sit at its 2 Mbit/s floor, judging every probe in flight as stuck), then cut.
	if peakDown < 20e6 || lowDown > 12e6 || lowDown >= peakDown {
		t.Errorf("download: controller did not follow 40→8 Mbit/s (before %.1f, lowest after %.1f Mbit/s)", peakDown/1e6, lowDown/1e6)
	}
	for _, f := range Evaluate(sc, rd, 1) {
		t.Logf("%s: p50 %.1f p95 %.1f p99 %.1f ms, used %.3f, recovery %.2f s, probes lost %.3f", f.Direction, f.P50AddedMs, f.P95AddedMs, f.P99AddedMs, f.Utilisation, f.RecoveryS, f.LostProbes)
	}
}
