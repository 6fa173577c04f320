package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Comparison is one script on one kernel against the baseline kernel in the
// same round.
type Comparison struct {
	Round       int          `json:"round"`
	Test        string       `json:"test"`
	Baseline    string       `json:"baseline"`
	Kernel      string       `json:"kernel"`
	Same        bool         `json:"same"`
	Differences []Difference `json:"differences,omitempty"`
	// Flaky lists cases that differ only because the script marks them
	// flaky (a failure reported as "ignored" on one side).
	Flaky []Difference `json:"flaky,omitempty"`
	// Timing lists simult_flows.sh cases that differ only because one
	// side's transfer missed the script's time limit (see Subtest.SlowMS).
	Timing []Difference `json:"timing,omitempty"`
}

// Difference is one case whose result differs between the kernels; an
// empty result means the case did not run on that kernel.
type Difference struct {
	Name     string `json:"name"`
	Baseline string `json:"baseline"`
	Kernel   string `json:"kernel"`
}

// Compare pairs each run with the baseline kernel's run of the same script
// and round, case by case.
func Compare(runs []*Run, baseline string) []Comparison {
	type key struct {
		round int
		test  string
	}
	base := map[key]*Run{}
	for _, r := range runs {
		if r.Kernel == baseline {
			base[key{r.Round, r.Test.String()}] = r
		}
	}
	var out []Comparison
	for _, r := range runs {
		if r.Kernel == baseline {
			continue
		}
		b, ok := base[key{r.Round, r.Test.String()}]
		if !ok {
			continue
		}
		c := Comparison{Round: r.Round, Test: r.Test.String(), Baseline: baseline, Kernel: r.Kernel}
		bkeys, bm := keyed(b.Subtests)
		rkeys, rm := keyed(r.Subtests)
		seen := map[string]bool{}
		for _, k := range append(bkeys, rkeys...) {
			if seen[k] {
				continue
			}
			seen[k] = true
			bs, rs := bm[k].Result, rm[k].Result
			if bs == rs {
				continue
			}
			d := Difference{Name: k, Baseline: bs, Kernel: rs}
			switch {
			case flakyOnly(bs, rs):
				c.Flaky = append(c.Flaky, d)
			case timingOnly(bm[k], rm[k]) && timingOnly(rm[k], bm[k]):
				c.Timing = append(c.Timing, d)
			default:
				c.Differences = append(c.Differences, d)
			}
		}
		if b.Status != r.Status && len(c.Differences) == 0 {
			c.Differences = append(c.Differences, Difference{Name: "(run status)", Baseline: b.Status, Kernel: r.Status})
		}
		c.Same = len(c.Differences) == 0
		out = append(out, c)
	}
	return out
}

// timingOnly: a is not a failure, or a failure of the time limit only.
func timingOnly(a, b Subtest) bool {
	if a.Result != Fail {
		return b.Result != Skip && b.Result != ""
	}
	return a.SlowMS > 0
}

// flakyOnly: pass on one side, "failed but flaky" on the other.
func flakyOnly(a, b string) bool {
	return (a == Pass && b == Ignored) || (a == Ignored && b == Pass)
}

// FlowRate is one simult_flows.sh case on one kernel against the baseline:
// the case's time as the script measures it (the 16 MiB transfer one way
// and 80 KiB the other, mptcp_connect's fixed 2 x 200 ms join sleeps, and for
// the first direction the netem setup), its median over rounds, and the
// slowdown in percent. Cases that failed only on the time limit count: the
// transfer completed. "(all cases)" sums the medians of the cases present on
// both kernels.
type FlowRate struct {
	Name       string  `json:"name"`
	Kernel     string  `json:"kernel"`
	BaselineMS int     `json:"baseline_ms"`
	KernelMS   int     `json:"kernel_ms"`
	BaseMbit   float64 `json:"baseline_mbit_s"`
	KernelMbit float64 `json:"kernel_mbit_s"`
	DeltaPct   float64 `json:"slowdown_pct"` // (kernel_ms / baseline_ms - 1) * 100
	Rounds     int     `json:"rounds"`
}

// AllCases names the FlowRate that sums every case.
const AllCases = "(all cases)"

// simultBytes is what one simult_flows.sh case moves: size=2*2048*4096 one
// way, 20 x 4 KiB the other (setup() in the script).
const simultBytes = 2*2048*4096 + 20*4096

// simultTimes returns kernel → case → case time per round, for the cases
// whose transfer completed (passed, flaky, or failed only on time).
func simultTimes(runs []*Run) map[string]map[string][]int {
	times := map[string]map[string][]int{}
	for _, r := range runs {
		if r.Test.Script != "simult_flows.sh" || r.Status != "done" {
			continue
		}
		if times[r.Kernel] == nil {
			times[r.Kernel] = map[string][]int{}
		}
		_, m := keyed(r.Subtests)
		for k, s := range m {
			if s.Result == Pass || s.Result == Ignored || (s.Result == Fail && s.SlowMS > 0) {
				times[r.Kernel][k] = append(times[r.Kernel][k], s.MS)
			}
		}
	}
	return times
}

// Throughput compares simult_flows.sh case times, median over rounds.
func Throughput(runs []*Run, baseline string) []FlowRate {
	times := simultTimes(runs)
	base := times[baseline]
	var out []FlowRate
	for _, kernel := range sortedKeys(times) {
		if kernel == baseline {
			continue
		}
		var total FlowRate
		total.Name, total.Kernel, total.Rounds = AllCases, kernel, -1
		for _, name := range sortedKeys(times[kernel]) {
			bt, ok := base[name]
			if !ok {
				continue
			}
			kt := times[kernel][name]
			bm, km := median(bt), median(kt)
			if bm <= 0 || km <= 0 {
				continue
			}
			f := FlowRate{
				Name: name, Kernel: kernel, BaselineMS: bm, KernelMS: km,
				BaseMbit: mbit(bm), KernelMbit: mbit(km),
				DeltaPct: (float64(km)/float64(bm) - 1) * 100,
				Rounds:   min(len(bt), len(kt)),
			}
			out = append(out, f)
			total.BaselineMS += bm
			total.KernelMS += km
			if total.Rounds < 0 || f.Rounds < total.Rounds {
				total.Rounds = f.Rounds
			}
		}
		if total.BaselineMS > 0 {
			total.DeltaPct = (float64(total.KernelMS)/float64(total.BaselineMS) - 1) * 100
			out = append(out, total)
		}
	}
	return out
}

// Spread returns, per kernel with at least two simult_flows.sh rounds, how
// much its total case time varied between rounds: (max/min - 1) * 100.
func Spread(runs []*Run) map[string]float64 {
	totals := map[string][]int{}
	for _, r := range runs {
		if r.Test.Script != "simult_flows.sh" || r.Status != "done" {
			continue
		}
		sum := 0
		for _, s := range r.Subtests {
			sum += s.MS
		}
		totals[r.Kernel] = append(totals[r.Kernel], sum)
	}
	out := map[string]float64{}
	for k, v := range totals {
		if len(v) < 2 {
			continue
		}
		lo, hi := v[0], v[0]
		for _, x := range v {
			lo, hi = min(lo, x), max(hi, x)
		}
		if lo > 0 {
			out[k] = (float64(hi)/float64(lo) - 1) * 100
		}
	}
	return out
}

// throughputProblems fails the run when a kernel's total simult_flows.sh
// time is slower than the baseline's by more than maxDelta percent and by
// more than either kernel's own round-to-round spread. With a single round
// the noise is unknown and the figures are only reported.
func throughputProblems(res *Results, maxDelta float64) []string {
	var out []string
	for _, f := range res.Throughput {
		if f.Name != AllCases || f.DeltaPct <= maxDelta {
			continue
		}
		sb, okb := res.Spread[res.Baseline]
		sk, okk := res.Spread[f.Kernel]
		if !okb || !okk {
			continue
		}
		if f.DeltaPct > max(sb, sk) {
			out = append(out, fmt.Sprintf("simult_flows on %s: total %.1f %% slower than %s (round spread %.1f / %.1f %%)",
				f.Kernel, f.DeltaPct, res.Baseline, sb, sk))
		}
	}
	return out
}

func mbit(ms int) float64 { return float64(simultBytes) * 8 / (float64(ms) * 1000) }

func median(v []int) int {
	if len(v) == 0 {
		return 0
	}
	s := append([]int(nil), v...)
	sort.Ints(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PrintSummary writes the human-readable report: per run the counts and
// failing cases, then the comparison and the simult_flows rates.
func PrintSummary(w io.Writer, res *Results) {
	fmt.Fprintf(w, "\n== MPTCP selftests (%s) ==\n", res.Accel)
	for _, k := range res.Kernels {
		fmt.Fprintf(w, "kernel %-8s %s  %s  sha256 %.12s  net.mptcp: %s\n", k.Label, k.Path, k.Release, k.SHA256, strings.Join(k.MPTCPSysctls, " "))
	}
	fmt.Fprintf(w, "\n%-5s %-8s %-30s %-7s %4s %5s %5s %5s %6s %8s\n", "round", "kernel", "script", "status", "exit", "pass", "fail", "skip", "flaky", "wall s")
	for _, r := range res.Runs {
		fmt.Fprintf(w, "%-5d %-8s %-30s %-7s %4d %5d %5d %5d %6d %8.0f\n", r.Round, r.Kernel, r.Test, r.Status, r.ExitCode,
			r.Counts.Pass, r.Counts.Fail, r.Counts.Skip, r.Counts.Ignored, r.WallSeconds)
	}
	for _, r := range res.Runs {
		if len(r.Failed) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nfailed on %s, %s (round %d):\n", r.Kernel, r.Test, r.Round)
		for _, f := range r.Failed {
			fmt.Fprintf(w, "  - %s\n", f)
		}
	}
	if len(res.Comparisons) > 0 {
		fmt.Fprintf(w, "\ncomparison against %s:\n", res.Baseline)
	}
	for _, c := range res.Comparisons {
		state := "same results"
		if !c.Same {
			state = fmt.Sprintf("%d case(s) DIFFER", len(c.Differences))
		}
		fmt.Fprintf(w, "  round %d %-8s %-30s %s", c.Round, c.Kernel, c.Test, state)
		if len(c.Flaky) > 0 {
			fmt.Fprintf(w, "; %d flaky-marked case(s) differ", len(c.Flaky))
		}
		if len(c.Timing) > 0 {
			fmt.Fprintf(w, "; %d case(s) differ only on the time limit", len(c.Timing))
		}
		fmt.Fprintln(w)
		for _, group := range []struct {
			tag string
			ds  []Difference
		}{{"", c.Differences}, {" (flaky)", c.Flaky}, {" (time limit)", c.Timing}} {
			for _, d := range group.ds {
				fmt.Fprintf(w, "      %s: %s=%s %s=%s%s\n", d.Name, c.Baseline, orNone(d.Baseline), c.Kernel, orNone(d.Kernel), group.tag)
			}
		}
	}
	if len(res.Throughput) > 0 {
		fmt.Fprintf(w, "\nsimult_flows.sh case time (median of rounds; Mbit/s = bytes moved / case time):\n")
		fmt.Fprintf(w, "  %-62s %-8s %9s %9s %8s\n", "case", "kernel", res.Baseline+" ms", "ms", "slower %")
		for _, f := range res.Throughput {
			fmt.Fprintf(w, "  %-62s %-8s %9d %9d %+8.1f\n", f.Name, f.Kernel, f.BaselineMS, f.KernelMS, f.DeltaPct)
		}
		for _, k := range sortedKeys(res.Spread) {
			fmt.Fprintf(w, "  round-to-round spread of the total on %s: %.1f %%\n", k, res.Spread[k])
		}
		if len(res.Spread) == 0 {
			fmt.Fprintln(w, "  (one round: noise unknown, slowdowns reported only; SELFTEST_ROUNDS=3 to judge them)")
		}
	}
	fmt.Fprintf(w, "\nverdict: %s\n", res.Verdict)
}

func orNone(s string) string {
	if s == "" {
		return "(not run)"
	}
	return s
}
