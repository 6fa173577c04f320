// Package traces holds the capacity traces of the variable LTE link the SQM bench shapes to
// (sqm/vmbench), as small text files embedded in the binary so that a VM guest needs no
// file copied in.
//
// It exists because a benchmark comparing rate controllers is only fair when every controller
// meets exactly the same capacity changes, and a text file makes those changes reviewable and
// replaceable by a recorded trace from a real modem.
//
// Format, one point per line: "seconds,up_mbit,down_mbit" (decimals allowed). The capacity
// holds from a point's time until the next point; the last point's time is the end of the
// trace. Blank lines and lines starting with '#' are ignored. Times must start at 0 and
// increase.
package traces

import (
	"bufio"
	"embed"
	"fmt"
	"io"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed *.csv
var files embed.FS

// Point is the capacity from At on, in bit/s per direction.
type Point struct {
	At       time.Duration
	Up, Down uint64
}

// Trace is a named capacity schedule.
type Trace struct {
	Name   string
	Points []Point
}

// Parse reads a trace in the format of the package doc. Errors name the line at fault.
func Parse(name string, r io.Reader) (Trace, error) {
	tr := Trace{Name: name}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Split(s, ",")
		if len(f) != 3 {
			return Trace{}, fmt.Errorf("trace %s line %d: %d fields, want 3 (seconds,up_mbit,down_mbit)", name, line, len(f))
		}
		var v [3]float64
		for i, field := range f {
			x, err := strconv.ParseFloat(strings.TrimSpace(field), 64)
			if err != nil || math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
				return Trace{}, fmt.Errorf("trace %s line %d field %d: %q is not a non-negative number", name, line, i+1, field)
			}
			v[i] = x
		}
		if v[1] == 0 || v[2] == 0 {
			return Trace{}, fmt.Errorf("trace %s line %d: zero capacity (a link that carries nothing is a cut, not a rate)", name, line)
		}
		if v[1] > 100e3 || v[2] > 100e3 {
			return Trace{}, fmt.Errorf("trace %s line %d: capacity above 100 Gbit/s (Mbit/s expected)", name, line)
		}
		p := Point{At: time.Duration(v[0] * float64(time.Second)), Up: uint64(v[1] * 1e6), Down: uint64(v[2] * 1e6)}
		if n := len(tr.Points); n == 0 && p.At != 0 {
			return Trace{}, fmt.Errorf("trace %s line %d: first point at %v, want 0", name, line, p.At)
		} else if n > 0 && p.At <= tr.Points[n-1].At {
			return Trace{}, fmt.Errorf("trace %s line %d: time %v not after the previous point's %v", name, line, p.At, tr.Points[n-1].At)
		}
		tr.Points = append(tr.Points, p)
	}
	if err := sc.Err(); err != nil {
		return Trace{}, fmt.Errorf("trace %s: reading line %d: %w", name, line+1, err)
	}
	if len(tr.Points) < 2 {
		return Trace{}, fmt.Errorf("trace %s: %d points, want at least 2 (the last one marks the end)", name, len(tr.Points))
	}
	return tr, nil
}

// Names lists the embedded traces.
func Names() []string {
	ents, _ := files.ReadDir(".")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".csv"))
	}
	sort.Strings(out)
	return out
}

// Load parses the embedded trace name (file name without .csv).
func Load(name string) (Trace, error) {
	f, err := files.Open(path.Clean(name) + ".csv")
	if err != nil {
		return Trace{}, fmt.Errorf("trace %s: %w (have %v)", name, err, Names())
	}
	defer f.Close()
	return Parse(name, f)
}

// Duration is the time of the last point.
func (t Trace) Duration() time.Duration { return t.Points[len(t.Points)-1].At }

// At is the capacity at d from the start (the last point's beyond the end).
func (t Trace) At(d time.Duration) Point {
	i := sort.Search(len(t.Points), func(i int) bool { return t.Points[i].At > d }) - 1
	return t.Points[max(i, 0)]
}

// Scaled returns the trace with every capacity multiplied by f (for a VM that cannot carry
// the full rates) and every time by timeF.
func (t Trace) Scaled(f, timeF float64) Trace {
	out := Trace{Name: t.Name, Points: make([]Point, len(t.Points))}
	for i, p := range t.Points {
		out.Points[i] = Point{At: time.Duration(float64(p.At) * timeF), Up: uint64(float64(p.Up) * f), Down: uint64(float64(p.Down) * f)}
	}
	return out
}
