package traces

import (
	"strings"
	"testing"
	"time"
)

func TestEmbeddedTracesParse(t *testing.T) {
	names := Names()
	for _, want := range []string{"step-80-to-10", "step-20-to-80", "random-walk", "idle-40"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Fatalf("Names() = %v, lacks %s", names, want)
		}
	}
	for _, n := range names {
		tr, err := Load(n)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Duration() < 10*time.Second {
			t.Errorf("%s lasts %v", n, tr.Duration())
		}
	}
	tr, err := Load("step-80-to-10")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at       time.Duration
		up, down uint64
	}{{0, 80e6, 80e6}, {6999 * time.Millisecond, 80e6, 80e6}, {7 * time.Second, 10e6, 10e6}, {time.Hour, 10e6, 10e6}} {
		if p := tr.At(c.at); p.Up != c.up || p.Down != c.down {
			t.Errorf("At(%v) = %+v, want up %d down %d", c.at, p, c.up, c.down)
		}
	}
	if s := tr.Scaled(0.5, 2); s.At(13*time.Second).Up != 40e6 || s.Duration() != 28*time.Second {
		t.Errorf("Scaled(0.5, 2): %+v", s.Points)
	}
	if _, err := Load("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Load(nope) = %v", err)
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"0,1,1\n1,2\n", "line 2: 2 fields"},
		{"0,1,1\n# c\n1,x,1\n", "line 3 field 2"},
		{"1,1,1\n2,1,1\n", "line 1: first point at 1s"},
		{"0,1,1\n0,1,1\n", "line 2: time 0s not after"},
		{"0,0,1\n1,1,1\n", "line 1: zero capacity"},
		{"0,-1,1\n1,1,1\n", "line 1 field 2"},
		{"0,1,1\n", "1 points"},
		{"0,1,1e9\n1,1,1\n", "line 1: capacity above"},
	} {
		_, err := Parse("t", strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", c.in, err, c.want)
		}
	}
	tr, err := Parse("ok", strings.NewReader("# x\n\n0, 1.5 ,2\n3,4,5\n"))
	if err != nil || len(tr.Points) != 2 || tr.Points[0].Up != 1.5e6 || tr.Points[1].At != 3*time.Second {
		t.Fatalf("Parse ok: %+v %v", tr, err)
	}
}
