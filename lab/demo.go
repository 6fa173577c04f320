package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// lostIn is how many bytes the sender handed to the socket in [fromNS,
// toNS) that never reached the receiver: TCP delivers a prefix of the
// stream, so the missing bytes are the tail after what was received.
func (ss *SendSummary) lostIn(fromNS, toNS, received int64) int64 {
	at := func(ns int64) int64 {
		if ss.BinNS == 0 || len(ss.Written) == 0 {
			return 0
		}
		// Bytes written by ns: the bins completed before it.
		i := int((ns-ss.StartNS)/ss.BinNS) - 1
		switch {
		case i < 0:
			return 0
		case i >= len(ss.Written):
			return ss.BytesSent
		}
		return ss.Written[i]
	}
	lo, hi := max(at(fromNS), received), at(toNS)
	return max(hi-lo, 0)
}

// DemoTable is the seed chapter's table, measured.
type DemoTable struct {
	Rows []DemoRow `json:"rows"`
}

// DemoRow is one line of it.
type DemoRow struct {
	Event      string  `json:"event"`
	LostBytes  int64   `json:"lost_bytes"`
	Mbps       float64 `json:"mbps"`
	Note       string  `json:"note,omitempty"`
	CeilingPct float64 `json:"ceiling_pct"`
}

func demoTable(r *Result) DemoTable {
	var t DemoTable
	ss, rs := r.send, r.recv
	lost := func(a, b float64) int64 {
		if ss == nil || rs == nil {
			return r.LostBytes
		}
		base := rs.FirstNS
		return ss.lostIn(base+int64(a*1e6), base+int64(b*1e6), rs.Bytes)
	}
	end := r.DurationMs + 1e6
	pct := func(v, c float64) float64 {
		if c == 0 {
			return 0
		}
		return 100 * v / c
	}
	t.Rows = append(t.Rows, DemoRow{"Fiber up", lost(-1e9, r.FaultAtMs), r.FiberMbps, "", pct(r.FiberMbps, r.FiberCeilingMbps)})
	t.Rows = append(t.Rows, DemoRow{"Fiber cut", lost(r.FaultAtMs, r.RestoreAtMs), r.LTEMbps, "(LTE)", pct(r.LTEMbps, r.LTECeilingMbps)})
	t.Rows = append(t.Rows, DemoRow{"Fiber restore", lost(r.RestoreAtMs, end), r.RestoreMbps, "", pct(r.RestoreMbps, r.FiberCeilingMbps)})
	return t
}

func printDemo(w io.Writer, r *Result) {
	t := demoTable(r)
	fmt.Fprintf(w, "\nFirmware transfer %s over one MPTCP connection (%s):\n\n", FormatSize(r.Size), r.Scenario)
	fmt.Fprintf(w, "| Event         | Lost bytes | Throughput          |\n")
	fmt.Fprintf(w, "|---------------|-----------:|--------------------:|\n")
	for _, row := range t.Rows {
		tp := fmt.Sprintf("%.0f Mb/s %s", row.Mbps, row.Note)
		lost := fmt.Sprint(row.LostBytes)
		if r.Hung {
			lost = "n/a (hung)" // the tail was in flight when the run was aborted
		}
		fmt.Fprintf(w, "| %-13s | %10s | %19s |\n", row.Event, lost, strings.TrimSpace(tp))
	}
	if r.Hung && r.Evidence != nil {
		fmt.Fprintf(w, "\nHUNG: %s\n", r.Evidence.Note)
	}
	opt := func(p *float64) string {
		if p == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f ms", *p)
	}
	fmt.Fprintf(w, "\nLongest stall: %.0f ms (at the cut: %.0f ms; after the restore: %.0f ms)\n", r.MaxStallMs, r.FaultStallMs, r.RestoreStallMs)
	fmt.Fprintf(w, "At the cut: detected %s, endpoint removed %s, first byte on LTE %s, first new byte at the receiver %s\n",
		opt(r.Breakdown.DetectedMs), opt(r.Breakdown.EndpointRemovedMs), opt(r.Breakdown.FirstLTEByteMs), opt(r.Breakdown.FirstNewByteMs))
	fmt.Fprintf(w, "Fail-back to 90 %% of the fiber rate: %s after the restore\n", opt(r.FailbackMs))
	fmt.Fprintf(w, "Payload ceilings (shaper × %.3f): fiber %.1f Mb/s, LTE %.1f Mb/s\n", PayloadShare, r.FiberCeilingMbps, r.LTECeilingMbps)
	ok := "MATCH"
	if !r.SHA256Match {
		ok = "MISMATCH"
	}
	fmt.Fprintf(w, "sha256 %s: %s (%s sent, %s received); connection survived: %v\n", ok, r.SHA256, FormatSize(r.BytesSent), FormatSize(r.BytesReceived), r.ConnectionSurvived)
}

// plotSVG draws the receiver's goodput per 100 ms with the fault, the
// restore and the supervisor's events marked.
func plotSVG(r *Result) string {
	const W, H, L, R, T, B = 900.0, 360.0, 60.0, 20.0, 30.0, 45.0
	pw, ph := W-L-R, H-T-B
	n := len(r.Series)
	maxY := 10.0
	for _, v := range r.Series {
		maxY = math.Max(maxY, v)
	}
	maxY = math.Ceil(maxY*1.1/50) * 50
	maxX := math.Max(float64(n)*0.1, 1)
	x := func(s float64) float64 { return L + pw*s/maxX }
	y := func(v float64) float64 { return T + ph*(1-v/maxY) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14">%s upload over MPTCP, %s: goodput per 100 ms</text>`+"\n", L, FormatSize(r.Size), html.EscapeString(r.Scenario))
	// Fault shading.
	if r.RestoreAtMs > r.FaultAtMs {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#fde2e2"/>`+"\n", x(r.FaultAtMs/1e3), T, x(r.RestoreAtMs/1e3)-x(r.FaultAtMs/1e3), ph)
	}
	// Axes and grid.
	for v := 0.0; v <= maxY; v += maxY / 5 {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", L, L+pw, y(v), y(v), L-5, y(v)+4, v)
	}
	step := math.Max(1, math.Round(maxX/10))
	for s := 0.0; s <= maxX; s += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>`+"\n", x(s), T+ph+15, s)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">time (s)</text>`+"\n", L+pw/2, H-8)
	fmt.Fprintf(&b, `<text x="15" y="%.1f" transform="rotate(-90 15 %.1f)" text-anchor="middle">Mbit/s</text>`+"\n", T+ph/2, T+ph/2)
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="black"/>`+"\n", L, T, pw, ph)
	// The series.
	var pts []string
	for i, v := range r.Series {
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(i)*0.1+0.05), y(v)))
	}
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#1f5fbf" stroke-width="1.5" points="%s"/>`+"\n", strings.Join(pts, " "))
	// Each subflow's tunnel, when recorded (wire rate, so above goodput).
	subColors := map[string]string{"fiber": "#e67e22", "wifi": "#8e44ad", "lte": "#16a085"}
	legend := 0
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#1f5fbf">goodput at the receiver</text>`+"\n", L+pw-200, T+ph-8)
	for _, name := range []string{"fiber", "wifi", "lte"} {
		ser, ok := r.SubflowSeries[name]
		if !ok {
			continue
		}
		var sp []string
		for i, v := range ser {
			if i >= n {
				break
			}
			sp = append(sp, fmt.Sprintf("%.1f,%.1f", x(float64(i)*0.1+0.05), y(math.Min(v, maxY))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1" stroke-dasharray="5 2" points="%s"/>`+"\n", subColors[name], strings.Join(sp, " "))
		legend++
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s">%s subflow (tunnel tx)</text>`+"\n", L+pw-200, T+ph-8-float64(legend)*14, subColors[name], name)
	}
	mark := func(ms float64, label, color string, row int) {
		xx := x(ms / 1e3)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="%s" stroke-dasharray="4 3"/>`+"\n", xx, xx, T, T+ph, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" fill="%s">%s</text>`+"\n", xx+3, T+14+float64(row)*14, color, html.EscapeString(label))
	}
	if r.FaultAtMs > 0 {
		mark(r.FaultAtMs, fmt.Sprintf("fiber %s (stall %.0f ms)", r.Scenario, r.FaultStallMs), "#c0392b", 0)
		mark(r.RestoreAtMs, "fiber restored", "#27ae60", 0)
	}
	row := 1
	for _, e := range r.Events {
		if e.Event != "route_switched" && e.Event != "uplink_up" && e.Event != "endpoint_added" {
			continue
		}
		at := r.FaultAtMs + e.Ms
		if at < 0 || at > maxX*1e3 {
			continue
		}
		mark(at, e.Event+" "+e.Uplink, "#7f8c8d", row)
		row = row%4 + 1
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	wf := addWorldFlags(fs)
	fo := addFailoverFlags(fs)
	fo.size = sizeFlag(demoSize)
	fo.cutAt = durFlag(demoCutAt)
	fo.restoreAfter = durFlag(demoRestoreAfter)
	// The demo's LTE uplink comes up through the simulated modem, as on
	// the appliance.
	if _, err := os.Stat("bin/lifeline-modemsim"); err == nil {
		fo.modemSim = "bin/lifeline-modemsim"
	}
	out := fs.String("out", "build/demo", "directory for result.json and throughput.svg")
	if err := parse(fs, args); err != nil {
		return err
	}
	o, err := fo.options(wf, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	start := time.Now()
	var last time.Time
	var lastN int64
	o.Progress = func(n int64, phase string) {
		now := time.Now()
		if now.Sub(last) < 250*time.Millisecond {
			return
		}
		rate := 0.0
		if !last.IsZero() {
			rate = float64(n-lastN) * 8 / now.Sub(last).Seconds() / 1e6
		}
		last, lastN = now, n
		label := map[string]string{"fiber": "fiber up     ", "fault": "FIBER CUT/LTE", "restored": "fiber back   "}[phase]
		fmt.Fprintf(stderr, "\r%s  %7.1f MB / %s  %5.1f%%  %6.1f Mbit/s  %4.0fs ", label, float64(n)/1e6,
			FormatSize(o.Size), 100*float64(n)/float64(o.Size), rate, now.Sub(start).Seconds())
	}
	fmt.Fprintf(stderr, "lab: building the world and starting lifeline (fiber %s/%v, LTE %s/%v)...\n",
		FormatRateS(o.World.Fiber.Rate), o.World.Fiber.RTT, FormatRateS(o.World.LTE.Rate), o.World.LTE.RTT)
	res, err := Failover(ctx, o)
	fmt.Fprintln(stderr)
	if res == nil {
		return err
	}
	printDemo(stdout, res)
	b, _ := json.MarshalIndent(res, "", "  ")
	if werr := os.WriteFile(filepath.Join(*out, "result.json"), b, 0o644); werr != nil {
		return werr
	}
	svg := filepath.Join(*out, "throughput.svg")
	if werr := os.WriteFile(svg, []byte(plotSVG(res)), 0o644); werr != nil {
		return werr
	}
	fmt.Fprintf(stdout, "Plot: %s, details: %s\n", svg, filepath.Join(*out, "result.json"))
	if err == nil && (res.Hung || !res.SHA256Match || !res.ConnectionSurvived) {
		err = fmt.Errorf("demo failed: hung=%v sha256_match=%v connection_survived=%v", res.Hung, res.SHA256Match, res.ConnectionSurvived)
	}
	return err
}

// Demo defaults: sized so the demo finishes in a few minutes on a 2-core
// machine (see the README for what the lab sustains there).
const (
	demoSize         = 1.5e9
	demoCutAt        = 15 * time.Second
	demoRestoreAfter = 10 * time.Second
)
