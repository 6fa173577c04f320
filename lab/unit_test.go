package lab

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/lab/linkem"
	"github.com/lifeline-router/lifeline/uplinks/mptcp"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"200MB": 200e6, "1.5GB": 1.5e9, "64MiB": 64 << 20, "1000": 1000, "10kB": 1e4} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1MB", "1e9", "12 parsecs", "NaNGB", "0"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): no error", in)
		}
	}
}

// Bad flags must fail before anything is built: Main returns at once with
// an error naming the flag, and (as root) no namespace appears.
func TestMainRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"failover", "--scenario", "meteor"},
		{"failover", "--size", "lots"},
		{"failover", "--fiber", "fast"},
		{"failover", "--lte-rtt", "-5ms"},
		{"failover", "--bogus"},
		{"failover", "--size", "200", "MB"},
		{"failover", "--scenario", "flap", "--restore-after", "100ms"},
		{"failover", "--shaper", "1.5"},
		{"failover", "--max-sndbuf", "1KiB"},
		{"failover", "--min-rcvbuf", "1KiB"},
		{"failover", "--cc", "vegas"},
		{"failover", "--backup-queue-min", "lots"},
		{"failover", "--shaper-burst", "-1KiB"},
		{"reinjection", "--limits", "1,2"},
		{"reinjection", "--limits", "0,5"},
		{"reinjection", "--limits", "0,1,1"},
		{"bench", "--cc", "BBR2"},
		{"failover", "--lifeline", "/nonexistent/lifeline"},
		{"bench", "--scenarios", "cut,meteor"},
		{"bench", "--trials", "0"},
		{"demo", "--cut-at", "soon"},
		{"rtt", "--probes", "1"},
		{"explode"},
		{},
	} {
		var out, errb bytes.Buffer
		start := time.Now()
		err := Main(context.Background(), args, &out, &errb)
		if err == nil || errors.Is(err, flag.ErrHelp) {
			t.Errorf("Main(%q): err = %v, want an error", args, err)
			continue
		}
		if time.Since(start) > time.Second {
			t.Errorf("Main(%q) took %v: it built something before failing", args, time.Since(start))
		}
		if strings.Contains(out.String(), "{") {
			t.Errorf("Main(%q) printed a result: %s", args, out.String())
		}
	}
}

func TestAggregate(t *testing.T) {
	v := func(x float64) *float64 { return &x }
	rs := []*Result{
		{FaultAtMs: 1, FaultStallMs: 140, DuplicateData: 300, FailbackMs: v(500), FiberMbps: 180, LTEMbps: 17, FiberCeilingMbps: 187.5, LTECeilingMbps: 17, SHA256Match: true, ConnectionSurvived: true},
		{FaultAtMs: 1, FaultStallMs: 50, DuplicateData: 0, FiberMbps: 170, LTEMbps: 16, SHA256Match: true, ConnectionSurvived: true},
		{FaultAtMs: 1, FaultStallMs: 900, Hung: true, Error: "transfer hung", LostBytes: 1000, LTECarryingBeforeFault: true},
	}
	st := aggregate(rs)
	if st.Trials != 3 || st.Hung != 1 || st.Failed != 1 || st.SHA256Match != 2 || st.Survived != 2 || st.LostBytes != 1000 || st.LTEBeforeFault != 1 {
		t.Errorf("counts: %+v", st)
	}
	if st.FaultStallMs.P100 != 900 || st.FaultStallMs.P50 != 140 || st.StallNoDupMs.P100 != 900 || st.StallWithDupMs.N != 1 {
		t.Errorf("stalls: all %+v, with dup %+v, without %+v", st.FaultStallMs, st.StallWithDupMs, st.StallNoDupMs)
	}
	if st.NoFailback != 2 || st.FailbackMs.P100 != 500 {
		t.Errorf("fail-back: %+v, none in %d", st.FailbackMs, st.NoFailback)
	}
	if st.RestoresWithoutKick != 0 {
		t.Errorf("trials without a scenario or a restore: %d restores without a kick", st.RestoresWithoutKick)
	}
	// Two restored cuts: the first kicked (5 ms before the restore's stamp
	// still counts: the lab stamps the restore after its netlink call), the
	// second did not.
	rs[0].Scenario, rs[0].FaultAtMs, rs[0].RestoreAtMs = "cut", 1000, 4000
	rs[0].Events = []RelEvent{{Ms: 2999, Event: "neighbour_kick", Uplink: "fiber"}}
	rs[1].Scenario, rs[1].FaultAtMs, rs[1].RestoreAtMs = "flap", 1000, 4000
	rs[1].Events = []RelEvent{{Ms: 200, Event: "neighbour_kick", Uplink: "fiber"}, {Ms: 3010, Event: "neighbour_kick", Uplink: "lte"}}
	if st := aggregate(rs); st.RestoresWithoutKick != 1 {
		t.Errorf("restores without a kick: %d, want 1", st.RestoresWithoutKick)
	}
	if st.RelayLateMaxMs.N != 0 || st.LabStalls != 0 {
		t.Errorf("no relay stats, yet late %+v, %d lab stalls", st.RelayLateMaxMs, st.LabStalls)
	}
	// The stop-12 bench's blackhole trial: the LTE relay 963 ms late in one direction.
	rs[0].Relays = map[string]linkem.Stats{"fiber": {LateMax: [2]time.Duration{13 * time.Millisecond, 13 * time.Millisecond}},
		"lte": {LateMax: [2]time.Duration{963 * time.Millisecond, 958 * time.Millisecond}}}
	rs[1].Relays = map[string]linkem.Stats{"fiber": {LateMax: [2]time.Duration{16 * time.Millisecond, 2 * time.Millisecond}}}
	st = aggregate(rs)
	if st.LabStalls != 1 || st.RelayLateMaxMs.N != 2 || st.RelayLateMaxMs.P100 != 963 || st.RelayLateMaxMs.Min != 16 {
		t.Errorf("relay lateness %+v, %d lab stalls; want 2 trials, worst 963 ms, 1 stall", st.RelayLateMaxMs, st.LabStalls)
	}
}

func TestDist(t *testing.T) {
	d := dist([]float64{5, 1, 4, 2, 3})
	if d.P50 != 3 || d.P100 != 5 || d.Min != 1 || d.N != 5 {
		t.Errorf("dist = %+v", d)
	}
	if d := dist(nil); d.N != 0 {
		t.Errorf("dist(nil) = %+v", d)
	}
}

// TestAnalyze feeds a synthetic upload: 1 s on "fiber", a fault at 1 s, a
// 150 ms gap, LTE at a tenth of the rate until the restore at 3 s, fiber
// again from 3.2 s.
func TestAnalyze(t *testing.T) {
	const ms = int64(time.Millisecond)
	accept := int64(1_000_000_000_000)
	rs := &RecvSummary{AcceptNS: accept, FirstNS: accept, BinNS: 10 * ms, MinGapNS: 2 * ms, SHA256: "ab", EOF: true}
	per := func(i int64) int64 {
		t := i * 10
		switch {
		case t < 1010:
			return 250_000 // 200 Mbit/s
		case t < 1160:
			return 0
		case t < 3200:
			return 25_000 // 20 Mbit/s
		}
		return 250_000
	}
	for i := int64(0); i < 400; i++ {
		rs.Bins = append(rs.Bins, per(i))
		rs.Bytes += per(i)
	}
	rs.LastNS = accept + 4000*ms
	rs.Gaps = []Gap{
		{StartNS: accept + 1010*ms, EndNS: accept + 1160*ms},
		{StartNS: accept + 2000*ms, EndNS: accept + 2030*ms}, // an LTE hiccup, not the failover
	}
	ss := &SendSummary{BytesSent: rs.Bytes, SHA256: "ab", MPTCP: true, PeerBytes: rs.Bytes, PeerSHA256: "ab"}
	rs.MPTCP = true
	res := &Result{Size: rs.Bytes}
	t0 := time.Unix(0, accept+1000*ms)
	t1 := time.Unix(0, accept+3000*ms)
	evs := []Event{
		{Time: t0.Add(-500 * time.Millisecond), Event: "uplink_down", Uplink: "fiber"}, // before: ignored
		{Time: t0.Add(3 * time.Millisecond), Event: "uplink_down", Uplink: "fiber"},
		{Time: t0.Add(5 * time.Millisecond), Event: "endpoint_removed", Uplink: "fiber"},
	}
	lte := []txSample{{t0.Add(-time.Millisecond), 5000}, {t0.Add(50 * time.Millisecond), 5300}, {t0.Add(90 * time.Millisecond), 9000}}
	analyze(res, rs, ss, evs, t0, t1, lte, time.Unix(0, accept))
	check := func(name string, got, want float64) {
		t.Helper()
		if d := got - want; d > 0.5 || d < -0.5 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("fault stall", res.FaultStallMs, 150)
	check("max stall", res.MaxStallMs, 150)
	check("fiber", res.FiberMbps, 200)
	check("lte", res.LTEMbps, 20)
	check("detected", *res.Breakdown.DetectedMs, 3)
	check("removed", *res.Breakdown.EndpointRemovedMs, 5)
	check("first lte byte", *res.Breakdown.FirstLTEByteMs, 90)
	check("first new byte", *res.Breakdown.FirstNewByteMs, 160)
	if res.FailbackMs == nil {
		t.Fatal("no fail-back found")
	}
	// The window 3190-3290 ms holds nine fiber bins and one LTE bin: 182 Mbit/s ≥ 90 %.
	check("failback", *res.FailbackMs, 290)
	check("restore", res.RestoreMbps, 200)
	if !res.SHA256Match || !res.ConnectionSurvived || res.LostBytes != 0 {
		t.Errorf("match %v survived %v lost %d", res.SHA256Match, res.ConnectionSurvived, res.LostBytes)
	}
	// A truncated stream is loss, attributed to when it was written.
	ss2 := &SendSummary{StartNS: accept, BinNS: 100 * ms, BytesSent: 1000, Written: []int64{400, 800, 1000}}
	if got := ss2.lostIn(accept, accept+100*ms, 600); got != 0 {
		t.Errorf("lostIn(first bin) = %d, want 0", got)
	}
	if got := ss2.lostIn(accept+100*ms, accept+1000*ms, 600); got != 400 {
		t.Errorf("lostIn(rest) = %d, want 400", got)
	}
}

func TestPlotSVG(t *testing.T) {
	r := &Result{Scenario: "cut", Size: 1e8, Series: []float64{100, 200, 0, 20, 200}, FaultAtMs: 150, RestoreAtMs: 350,
		Events: []RelEvent{{Ms: 10, Event: "route_switched", Uplink: "lte"}}}
	svg := plotSVG(r)
	for _, want := range []string{"<svg", "polyline", "fiber cut", "fiber restored", "route_switched lte", "</svg>"} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q", want)
		}
	}
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("svg is not well-formed XML: %v", err)
		}
	}
}

func TestSeriesFrom(t *testing.T) {
	base := time.Unix(100, 0)
	at := func(ms int, b uint64) txSample { return txSample{base.Add(time.Duration(ms) * time.Millisecond), b} }
	// 125000 bytes in the first 100 ms bin = 10 Mbit/s; a counter reset is skipped;
	// samples before the base do not count.
	got := seriesFrom([]txSample{at(-50, 0), at(-10, 5000), at(50, 67500), at(90, 130000), at(150, 100), at(190, 12600)},
		base.UnixNano(), int64(100*time.Millisecond))
	want := []float64{10, 1}
	if len(got) != len(want) {
		t.Fatalf("seriesFrom = %v, want %v", got, want)
	}
	// A receiver that never got a byte has no base: no series (it used
	// to allocate one bin per 100 ms since 1970 and was killed for it).
	if got := seriesFrom([]txSample{at(0, 0), at(100, 5000)}, 0, int64(100*time.Millisecond)); got != nil {
		t.Errorf("seriesFrom(base 0) = %d bins, want none", len(got))
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Errorf("bin %d = %v Mbit/s, want %v", i, got[i], want[i])
		}
	}
}

// TestShaperQueueBytes: the burst allowance is off by default and
// --shaper-burst adds to the 5 ms queue, not to the 64 KiB floor.
func TestShaperQueueBytes(t *testing.T) {
	fiber := &Path{Link: Link{Rate: 220e6}}
	lte := &Path{Link: Link{Rate: 20e6}}
	for _, tc := range []struct {
		burst string
		want  int
	}{
		{"", 130625}, // 5 ms at 95 % of 220 Mbit/s
		{"0", 130625},
		{"96KiB", 130625 + 96<<10},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		wf := addWorldFlags(fs)
		args := []string{}
		if tc.burst != "" {
			args = append(args, "--shaper-burst", tc.burst)
		}
		if err := fs.Parse(args); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		o, err := wf.options(io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.setDefaults(); err != nil {
			t.Fatal(err)
		}
		w := &World{opt: o}
		if got := w.ShaperQueueBytes(fiber); got != tc.want {
			t.Errorf("--shaper-burst %q: fiber limit %d, want %d", tc.burst, got, tc.want)
		}
		// LTE: 5 ms is 11875 bytes, under the 64 KiB floor without the burst.
		wantLTE := 64 << 10
		if tc.burst == "96KiB" {
			wantLTE = 11875 + 96<<10
		}
		if got := w.ShaperQueueBytes(lte); got != wantLTE {
			t.Errorf("--shaper-burst %q: LTE limit %d, want %d", tc.burst, got, wantLTE)
		}
	}
}

func TestParseLimits(t *testing.T) {
	for v, want := range map[string][]int{"0,1": {0, 1}, "2, 0": {2, 0}, "0,1,2": {0, 1, 2}, "0,4": {0, 4}} {
		got, err := parseLimits(v)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseLimits(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"", "0", "1,2", "0,x", "0,5", "0,1,0"} {
		if got, err := parseLimits(v); err == nil {
			t.Errorf("parseLimits(%q) = %v, want an error", v, got)
		}
	}
}

func TestMissingEndpoints(t *testing.T) {
	fiber, lte := &Path{Name: "fiber", Index: 1}, &Path{Name: "lte", Index: 3}
	ep := func(addr string) mptcp.Endpoint { return mptcp.Endpoint{Addr: netip.MustParseAddr(addr)} }
	for _, tc := range []struct {
		eps  []mptcp.Endpoint
		want []string
	}{
		{[]mptcp.Endpoint{ep("10.55.1.2"), ep("10.55.3.2")}, nil},
		{[]mptcp.Endpoint{ep("10.55.1.2")}, []string{"lte (10.55.3.2)"}},
		// 10.55.3.20 is not 10.55.3.2: whole addresses, not prefixes.
		{[]mptcp.Endpoint{ep("10.55.3.20")}, []string{"fiber (10.55.1.2)", "lte (10.55.3.2)"}},
		{nil, []string{"fiber (10.55.1.2)", "lte (10.55.3.2)"}},
	} {
		if got := missingEndpoints(tc.eps, []*Path{fiber, lte}); !slices.Equal(got, tc.want) {
			t.Errorf("missingEndpoints(%v) = %q, want %q", tc.eps, got, tc.want)
		}
	}
}
