package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// A closing TAP block as mptcp_lib.sh prints it (taken from a run of
// simult_flows.sh and mptcp_join.sh here), with the scripts' own progress
// lines before it.
const sampleOutput = "01 balanced bwidth                                            max 7906       [FAIL]\r\n" +
	"client exit code 0, server 1\n" +
	"\n" +
	"TAP version 13\n" +
	"1..6\n" +
	"not ok 1 - simult_flows: balanced bwidth # time=15493ms\n" +
	"ok 2 - simult_flows: balanced bwidth - reverse direction # time=18514ms\r\n" +
	"ok 3 - simult_flows: unbalanced bwidth # IGNORE Flaky time=19960ms\n" +
	"ok 4 - mptcp_join: 012 signal address: ack rx # SKIP time=12ms\n" +
	"ok 5 - mptcp_join: 013 no JOIN: join Rx # time=1ms\n" +
	"ok 6 - mptcp_join: 013 no JOIN: join Rx # time=2ms\n" +
	"okay 7 - not a result line\n"

func TestParseTAP(t *testing.T) {
	got := ParseTAP(sampleOutput)
	want := []Subtest{
		{Name: "balanced bwidth", Result: Fail, MS: 15493},
		{Name: "balanced bwidth - reverse direction", Result: Pass, MS: 18514},
		{Name: "unbalanced bwidth", Result: Ignored, MS: 19960},
		{Name: "012 signal address: ack rx", Result: Skip, MS: 12},
		{Name: "013 no JOIN: join Rx", Result: Pass, MS: 1},
		{Name: "013 no JOIN: join Rx", Result: Pass, MS: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseTAP:\n got %+v\nwant %+v", got, want)
	}
	c, failed, skipped := Tally(got)
	if c != (Counts{Pass: 3, Fail: 1, Skip: 1, Ignored: 1}) {
		t.Errorf("Tally counts = %+v", c)
	}
	if !reflect.DeepEqual(failed, []string{"balanced bwidth"}) || !reflect.DeepEqual(skipped, []string{"012 signal address: ack rx"}) {
		t.Errorf("Tally failed %q skipped %q", failed, skipped)
	}
}

func TestParseTAPPartial(t *testing.T) {
	// A run cut off by the timeout has no TAP block: no subtests, no crash.
	if got := ParseTAP("001 no JOIN\n      join Rx [ OK ]\n"); len(got) != 0 {
		t.Fatalf("ParseTAP(progress only) = %+v", got)
	}
}

func TestParseTests(t *testing.T) {
	got, err := ParseTests(" simult_flows.sh  mptcp_join.sh:-f,-l ")
	if err != nil {
		t.Fatal(err)
	}
	want := []Test{{Script: "simult_flows.sh"}, {Script: "mptcp_join.sh", Args: []string{"-f", "-l"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseTests = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "../x.sh", "mptcp_join", "a/b.sh:-f"} {
		if _, err := ParseTests(bad); err == nil {
			t.Errorf("ParseTests(%q): no error", bad)
		}
	}
}

func run(kernel string, round int, script string, subs ...Subtest) *Run {
	return &Run{Round: round, Kernel: kernel, Test: Test{Script: script}, Status: "done", Subtests: subs}
}

func TestCompare(t *testing.T) {
	runs := []*Run{
		run("stock", 1, "mptcp_join.sh",
			Subtest{Name: "a", Result: Pass}, Subtest{Name: "b", Result: Fail}, Subtest{Name: "c", Result: Pass},
			Subtest{Name: "d", Result: Ignored}, Subtest{Name: "e", Result: Pass}),
		run("patched", 1, "mptcp_join.sh",
			Subtest{Name: "a", Result: Pass}, Subtest{Name: "b", Result: Fail}, Subtest{Name: "c", Result: Fail},
			Subtest{Name: "d", Result: Pass}, Subtest{Name: "e", Result: Pass}, Subtest{Name: "e", Result: Pass}),
		run("stock", 1, "simult_flows.sh", Subtest{Name: "x", Result: Pass}),
		run("patched", 1, "simult_flows.sh", Subtest{Name: "x", Result: Pass}),
	}
	cs := Compare(runs, "stock")
	if len(cs) != 2 {
		t.Fatalf("Compare: %d comparisons, want 2: %+v", len(cs), cs)
	}
	j := cs[0]
	wantDiff := []Difference{{Name: "c", Baseline: Pass, Kernel: Fail}, {Name: "e (2)", Baseline: "", Kernel: Pass}}
	if j.Same || !reflect.DeepEqual(j.Differences, wantDiff) {
		t.Errorf("join: same=%v differences %+v, want %+v", j.Same, j.Differences, wantDiff)
	}
	if !reflect.DeepEqual(j.Flaky, []Difference{{Name: "d", Baseline: Ignored, Kernel: Pass}}) {
		t.Errorf("join: flaky %+v", j.Flaky)
	}
	if !cs[1].Same {
		t.Errorf("simult_flows: not same: %+v", cs[1])
	}
}

func TestCompareRunStatus(t *testing.T) {
	// A run that timed out before printing its TAP block must not compare
	// as "same" to a baseline that also printed nothing.
	b := run("stock", 1, "mptcp_connect.sh")
	p := run("patched", 1, "mptcp_connect.sh")
	p.Status = "timeout"
	cs := Compare([]*Run{b, p}, "stock")
	if len(cs) != 1 || cs[0].Same {
		t.Fatalf("Compare = %+v, want a difference", cs)
	}
}

func TestThroughput(t *testing.T) {
	runs := []*Run{
		run("stock", 1, "simult_flows.sh", Subtest{Name: "bal", Result: Pass, MS: 10000}, Subtest{Name: "unbal", Result: Fail, MS: 9000}),
		run("patched", 1, "simult_flows.sh", Subtest{Name: "bal", Result: Pass, MS: 10300}, Subtest{Name: "unbal", Result: Pass, MS: 9000}),
		run("stock", 2, "simult_flows.sh", Subtest{Name: "bal", Result: Pass, MS: 12000}),
		run("patched", 2, "simult_flows.sh", Subtest{Name: "bal", Result: Ignored, MS: 9700}),
		run("stock", 3, "simult_flows.sh", Subtest{Name: "bal", Result: Pass, MS: 11000}),
		run("patched", 3, "simult_flows.sh", Subtest{Name: "bal", Result: Pass, MS: 11220}),
	}
	got := Throughput(runs, "stock")
	if len(got) != 2 || got[1].Name != AllCases || got[1].KernelMS != 10300 {
		t.Fatalf("Throughput = %+v, want the case that completed on both, and the total", got)
	}
	f := got[0]
	if f.Name != "bal" || f.BaselineMS != 11000 || f.KernelMS != 10300 || f.Rounds != 3 {
		t.Fatalf("Throughput = %+v", f)
	}
	if f.DeltaPct > -6.3 || f.DeltaPct < -6.4 {
		t.Errorf("slowdown = %.2f %%, want (10300/11000-1)*100 = -6.36", f.DeltaPct)
	}
	if f.KernelMbit <= f.BaseMbit {
		t.Errorf("rates %.2f (patched) <= %.2f (stock) although patched was faster", f.KernelMbit, f.BaseMbit)
	}
}

func TestPrintSummary(t *testing.T) {
	runs := []*Run{
		run("stock", 1, "mptcp_join.sh", Subtest{Name: "a", Result: Fail}),
		run("patched", 1, "mptcp_join.sh", Subtest{Name: "a", Result: Pass}),
	}
	runs[0].Counts, runs[0].Failed, _ = Tally(runs[0].Subtests)
	res := &Results{Baseline: "stock", Runs: runs, Comparisons: Compare(runs, "stock"), Verdict: "x"}
	var b bytes.Buffer
	PrintSummary(&b, res)
	for _, want := range []string{"failed on stock, mptcp_join.sh", "  - a", "1 case(s) DIFFER", "a: stock=fail patched=pass", "verdict: x"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

func TestMarkSlowAndTiming(t *testing.T) {
	// Progress lines as simult_flows.sh prints them: both sides may report
	// on one line, without a separator.
	out := "01 balanced bwidth   transfer slower than expected! runtime 9106 ms, expected 7906 mstransfer slower than expected! runtime 9850 ms, expected 7906 ms max 7906       [FAIL]\n" +
		"02 balanced bwidth - reverse direction   max 7906 [ OK ]\n" +
		"03 other  max 7906 [FAIL]\n" +
		"not ok 1 - simult_flows: balanced bwidth # time=20226ms\n" +
		"ok 2 - simult_flows: balanced bwidth - reverse direction # time=13363ms\n" +
		"not ok 3 - simult_flows: other # time=1000ms\n"
	subs := ParseTAP(out)
	MarkSlow(subs, out)
	if subs[0].SlowMS != 9850 || subs[1].SlowMS != 0 || subs[2].SlowMS != 0 {
		t.Fatalf("MarkSlow: %+v", subs)
	}
	base := run("stock", 1, "simult_flows.sh",
		Subtest{Name: "balanced bwidth", Result: Pass, MS: 10000},
		Subtest{Name: "balanced bwidth - reverse direction", Result: Pass, MS: 10000},
		Subtest{Name: "other", Result: Pass, MS: 1000})
	cs := Compare([]*Run{base, run("patched", 1, "simult_flows.sh", subs...)}, "stock")
	if len(cs[0].Timing) != 1 || cs[0].Timing[0].Name != "balanced bwidth" {
		t.Errorf("timing-only differences %+v", cs[0].Timing)
	}
	if len(cs[0].Differences) != 1 || cs[0].Differences[0].Name != "other" {
		t.Errorf("differences %+v: a failure without the time-limit message must count", cs[0].Differences)
	}
}

func TestThroughputVerdict(t *testing.T) {
	var runs []*Run
	// stock varies 10 % between rounds; patched is 5 % slower than stock's median.
	for i, ms := range []int{10000, 11000, 10500} {
		runs = append(runs, run("stock", i+1, "simult_flows.sh", Subtest{Name: "a", Result: Pass, MS: ms}))
	}
	for i, ms := range []int{11025, 11025, 11025} {
		runs = append(runs, run("patched", i+1, "simult_flows.sh", Subtest{Name: "a", Result: Pass, MS: ms}))
	}
	res := &Results{Baseline: "stock", Runs: runs}
	if code := finish(res, 2); code != 0 {
		t.Errorf("5 %% slower within a 10 %% spread: verdict %q", res.Verdict)
	}
	if res.Spread["stock"] < 9.9 || res.Spread["stock"] > 10.1 || res.Spread["patched"] != 0 {
		t.Errorf("spread %+v", res.Spread)
	}
	for _, r := range runs[3:] {
		r.Subtests[0].MS = 13000
	}
	if code := finish(res, 2); code != 1 {
		t.Errorf("24 %% slower beyond a 10 %% spread: verdict %q", res.Verdict)
	}
	// One round each: noise unknown, reported but not a failure.
	res = &Results{Baseline: "stock", Runs: []*Run{runs[0], runs[3]}}
	if code := finish(res, 2); code != 0 {
		t.Errorf("single round: verdict %q", res.Verdict)
	}
}
