package simlink

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/sqm/autorate"
)

func TestWritePlot(t *testing.T) {
	sc := Scenarios(1)[0]
	sc.Duration = 20 * time.Second
	series := []Series{
		{"lifeline", "#1f77b4", Run(sc.Config, autorate.NewLifeline(autorate.DefaultLifeline(DefaultBounds)))},
		{"cake-autorate", "#ff7f0e", Run(sc.Config, autorate.NewBaseline(autorate.DefaultBaseline(DefaultBounds)))},
	}
	var buf bytes.Buffer
	if err := WritePlot(&buf, sc, series); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML; capacity + per series a rate and a latency line, all inside the canvas.
	dec := xml.NewDecoder(&buf)
	lines := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("SVG not well-formed: %v", err)
			}
			break
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "polyline" {
			continue
		}
		lines++
		for _, a := range se.Attr {
			if a.Name.Local != "points" {
				continue
			}
			pts := strings.Fields(a.Value)
			if len(pts) < 2 {
				t.Errorf("polyline %d has %d points", lines, len(pts))
			}
			for _, p := range pts {
				xy := strings.Split(p, ",")
				x, _ := strconv.ParseFloat(xy[0], 64)
				y, _ := strconv.ParseFloat(xy[1], 64)
				if x < plotLeft || x > plotW-plotRight || y < rateTop || y > latTop+latH {
					t.Fatalf("point %s outside the plot area", p)
				}
			}
		}
	}
	if lines != 1+2*len(series) {
		t.Errorf("%d polylines, want %d", lines, 1+2*len(series))
	}
}

func TestWriteBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole comparison")
	}
	dir := t.TempDir()
	r, err := WriteBench(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	n := len(Scenarios(1))
	if r.Kind != "simulated" || n != 8 || len(r.Results) != 4*n || len(r.Plots) != n {
		t.Errorf("report: kind %q, %d results, plots %v", r.Kind, len(r.Results), r.Plots)
	}
	for _, p := range append(r.Plots, "autorate.json") {
		if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
}
