package simlink

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Series is one controller's run on a scenario, for a plot.
type Series struct {
	Name   string
	Color  string
	Result Result
}

// Plot geometry: two panels sharing the time axis, rates above, added latency (log scale) below.
const (
	plotW, plotLeft, plotRight = 960.0, 64.0, 16.0
	rateTop, rateH             = 40.0, 240.0
	latTop, latH               = 330.0, 200.0
	plotH                      = 580.0
	latMinMs, latMaxMs         = 1.0, 3000.0
)

// WritePlot draws capacity, each series' shaper rate and each series' added latency (per
// probe, the maximum over 100 ms buckets) over time as a self-contained SVG.
func WritePlot(w io.Writer, sc Scenario, series []Series) error {
	bw := bufio.NewWriter(w)
	dur := sc.Duration.Seconds()
	maxRate := 0.0
	for _, s := range series {
		for _, p := range s.Result.Timeline {
			maxRate = max(maxRate, p.Capacity)
			if !math.IsInf(p.Rate, 1) {
				maxRate = max(maxRate, p.Rate)
			}
		}
	}
	maxRate = math.Ceil(maxRate/1e6/10) * 10 // Mbit/s, to a multiple of 10
	if maxRate == 0 {
		maxRate = 10
	}
	x := func(t time.Duration) float64 {
		return plotLeft + t.Seconds()/dur*(plotW-plotLeft-plotRight)
	}
	yRate := func(bps float64) float64 {
		return rateTop + rateH - min(bps/1e6, maxRate)/maxRate*rateH
	}
	yLat := func(ms float64) float64 {
		v := min(max(ms, latMinMs), latMaxMs)
		return latTop + latH - math.Log10(v/latMinMs)/math.Log10(latMaxMs/latMinMs)*latH
	}

	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(bw, `<text x="%.0f" y="18" font-size="14">%s: simulated LTE uplink (simlink), rate and added latency</text>`+"\n", plotLeft, esc(sc.Name))

	// Axes and grid.
	for i := 0; i <= 5; i++ {
		v := maxRate * float64(i) / 5
		y := yRate(v * 1e6)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%g</text>`+"\n",
			plotLeft, y, plotW-plotRight, y, plotLeft-4, y+4, v)
	}
	fmt.Fprintf(bw, `<text x="14" y="%.0f" transform="rotate(-90 14 %.0f)" text-anchor="middle">Mbit/s</text>`+"\n", rateTop+rateH/2, rateTop+rateH/2)
	for _, ms := range []float64{1, 10, 100, 1000} {
		y := yLat(ms)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%g</text>`+"\n",
			plotLeft, y, plotW-plotRight, y, plotLeft-4, y+4, ms)
	}
	for _, g := range []struct {
		ms    float64
		label string
	}{{15, "15 ms goal (p95)"}, {30, "30 ms (recovery)"}} {
		y := yLat(g.ms)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="4 3" stroke-width="0.8"/><text x="%.1f" y="%.1f" fill="#c00" text-anchor="end">%s</text>`+"\n",
			plotLeft, y, plotW-plotRight, y, plotW-plotRight-2, y-3, g.label)
	}
	fmt.Fprintf(bw, `<text x="14" y="%.0f" transform="rotate(-90 14 %.0f)" text-anchor="middle">added latency, ms (log)</text>`+"\n", latTop+latH/2, latTop+latH/2)
	step := niceStep(dur)
	for t := 0.0; t <= dur+1e-9; t += step {
		xx := x(time.Duration(t * float64(time.Second)))
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/><text x="%.1f" y="%.1f" text-anchor="middle">%gs</text>`+"\n",
			xx, rateTop, xx, latTop+latH, xx, latTop+latH+14, t)
	}
	fmt.Fprintf(bw, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", plotLeft, rateTop, plotW-plotLeft-plotRight, rateH)
	fmt.Fprintf(bw, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", plotLeft, latTop, plotW-plotLeft-plotRight, latH)
	if sc.IdleAt > 0 {
		xx := x(sc.IdleAt)
		fmt.Fprintf(bw, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f4f4f4"/><text x="%.1f" y="%.1f" fill="#888">idle (no load)</text>`+"\n",
			xx, rateTop, plotW-plotRight-xx, rateH, xx+4, rateTop+12)
	}

	// Capacity, from the first series' timeline (all runs share the trace).
	if len(series) > 0 {
		var pts []string
		for _, p := range stepPoints(series[0].Result.Timeline, func(p Point) float64 { return p.Capacity }) {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.t), yRate(p.v)))
		}
		fmt.Fprintf(bw, `<polyline fill="none" stroke="#000" stroke-width="2.2" opacity="0.35" points="%s"/>`+"\n", strings.Join(pts, " "))
	}
	for _, s := range series {
		var pts []string
		for _, p := range stepPoints(s.Result.Timeline, func(p Point) float64 { return p.Rate }) {
			if math.IsInf(p.v, 1) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.t), yRate(p.v)))
		}
		if len(pts) > 0 {
			fmt.Fprintf(bw, `<polyline fill="none" stroke="%s" stroke-width="1.2" points="%s"/>`+"\n", s.Color, strings.Join(pts, " "))
		}
		// Added latency: the worst probe per 100 ms bucket.
		const bucket = 100 * time.Millisecond
		var lat []string
		cur, worst, have := time.Duration(-1), 0.0, false
		flush := func() {
			if have {
				lat = append(lat, fmt.Sprintf("%.1f,%.1f", x(cur*bucket+bucket/2), yLat(worst)))
			}
		}
		for _, p := range s.Result.Probes {
			b := p.Sent / bucket
			if b != cur {
				flush()
				cur, worst, have = b, 0, true
			}
			worst = max(worst, float64(p.Added)/float64(time.Millisecond))
		}
		flush()
		fmt.Fprintf(bw, `<polyline fill="none" stroke="%s" stroke-width="1" points="%s"/>`+"\n", s.Color, strings.Join(lat, " "))
	}

	// Legend.
	lx := plotLeft + 8
	fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" stroke-width="2.2" opacity="0.35"/><text x="%.1f" y="%.1f">capacity</text>`+"\n",
		lx, plotH-18, lx+20, plotH-18, lx+24, plotH-14)
	lx += 90
	for _, s := range series {
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
			lx, plotH-18, lx+20, plotH-18, s.Color, lx+24, plotH-14, esc(s.Name))
		lx += 44 + 7*float64(len(s.Name))
	}
	fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" fill="#555">shaper rate above, added latency (log) below</text>`+"\n", lx+8, plotH-14)
	fmt.Fprintln(bw, `</svg>`)
	return bw.Flush()
}

type tv struct {
	t time.Duration
	v float64
}

// stepPoints turns a per-tick series into the corners of a step line (only where it changes).
func stepPoints(tl []Point, f func(Point) float64) []tv {
	var out []tv
	for i, p := range tl {
		v := f(p)
		if i == 0 {
			out = append(out, tv{0, v})
			continue
		}
		if prev := out[len(out)-1].v; v != prev {
			out = append(out, tv{p.T, prev}, tv{p.T, v})
		}
	}
	if n := len(tl); n > 0 {
		out = append(out, tv{tl[n-1].T, f(tl[n-1])})
	}
	return out
}

func niceStep(dur float64) float64 {
	for _, s := range []float64{1, 2, 5, 10, 20, 30, 60} {
		if dur/s <= 12 {
			return s
		}
	}
	return 120
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// WriteBench runs the comparison of seed and writes dir/autorate.json and, per scenario,
// dir/autorate-<scenario>.svg with capacity, our rate, the cake-autorate baseline's rate and
// both added latencies. It returns the report.
func WriteBench(dir string, seed int64) (Report, error) {
	r := RunComparison(seed, DefaultBounds)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, fmt.Errorf("MkdirAll(%s): %w", dir, err)
	}
	colors := map[string]string{"lifeline": "#1f77b4", "cake-autorate": "#ff7f0e"}
	for _, sc := range Scenarios(seed) {
		var series []Series
		for _, c := range Contenders(DefaultBounds) {
			if colors[c.Name] == "" {
				continue
			}
			series = append(series, Series{Name: c.Name, Color: colors[c.Name], Result: Run(sc.Config, c.New(sc.Download))})
		}
		name := "autorate-" + sc.Name + ".svg"
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			return r, fmt.Errorf("Create(%s): %w", p, err)
		}
		err = WritePlot(f, sc, series)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return r, fmt.Errorf("WritePlot(%s): %w", p, err)
		}
		r.Plots = append(r.Plots, name)
	}
	return r, r.WriteJSON(filepath.Join(dir, "autorate.json"))
}
