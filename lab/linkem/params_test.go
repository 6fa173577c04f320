package linkem

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"220mbit", 220e6}, {"20Mbit", 20e6}, {"500kbit", 500e3}, {"1gbit", 1e9},
		{"2.5mbit", 2.5e6}, {"64000bit", 64000}, {"64000", 64000}, {"0", 0}, {" 10MBIT ", 10e6},
	} {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if tc.want != 0 {
			if back, err := ParseRate(FormatRate(tc.want)); err != nil || back != tc.want {
				t.Errorf("ParseRate(FormatRate(%d)=%q) = %d, %v", tc.want, FormatRate(tc.want), back, err)
			}
		}
	}
	for _, bad := range []string{"", "mbit", "fast", "20mbps", "20kbps", "-1mbit", "1e3mbit", "inf", "nan", "0x10", "2000tbit"} {
		if got, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %d, want an error", bad, got)
		} else if !strings.Contains(err.Error(), "rate") {
			t.Errorf("ParseRate(%q) error %q does not say it is about a rate", bad, err)
		}
	}
}

func TestParseTrace(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader(`# LTE step down and back
0     80mbit
2.5   10mbit   # the step
  
7 20Mbit
7 500kbit
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Trace{{0, 80e6}, {2500 * time.Millisecond, 10e6}, {7 * time.Second, 20e6}, {7 * time.Second, 500e3}}
	if len(tr) != len(want) {
		t.Fatalf("ParseTrace = %v, want %v", tr, want)
	}
	for i := range want {
		if tr[i] != want[i] {
			t.Errorf("step %d = %v, want %v", i, tr[i], want[i])
		}
	}
	back, err := ParseTrace(strings.NewReader(tr.String()))
	if err != nil || len(back) != len(tr) || back[1] != tr[1] {
		t.Errorf("ParseTrace(String()) = %v, %v; want %v", back, err, tr)
	}

	for _, tc := range []struct{ in, want string }{
		{"0 10mbit\nfoo\n", "line 2"},
		{"0 10mbit\n1 10mbit 3\n", "line 2"},
		{"# c\n\nabc 10mbit\n", "line 3: time"},
		{"0 10mbit\n1 20mbps\n", "line 2: rate"},
		{"-1 10mbit\n", "line 1: time"},
		{"5 10mbit\n1 20mbit\n", "line 2: time 1s is before"},
		{"# only comments\n", "no steps"},
	} {
		_, err := ParseTrace(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTrace(%q) error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestParamsJSON(t *testing.T) {
	p := Params{Rate: 20e6, Delay: 2500 * time.Microsecond, Buffer: 4 << 20, Loss: 0.05, Overhead: 28}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"delay":"2.5ms"`) {
		t.Errorf("Marshal = %s, want a readable delay", b)
	}
	var q Params
	if err := json.Unmarshal(b, &q); err != nil || q != p {
		t.Errorf("round trip = %v, %v; want %v", q, err, p)
	}
	// A patch changes only the fields it has.
	if err := json.Unmarshal([]byte(`{"rate":"10mbit","delay":1000000}`), &q); err != nil {
		t.Fatal(err)
	}
	if want := (Params{Rate: 10e6, Delay: time.Millisecond, Buffer: 4 << 20, Loss: 0.05, Overhead: 28}); q != want {
		t.Errorf("after patch %v, want %v", q, want)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"rate":"fast"}`, "rate"},
		{`{"delay":"soon"}`, "delay"},
		{`{"delay":true}`, "delay"},
		{`{"speed":1}`, "speed"},
	} {
		var p Params
		if err := json.Unmarshal([]byte(tc.in), &p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Unmarshal(%s) error %v, want one naming %q", tc.in, err, tc.want)
		}
	}
}

func TestFollowTrace(t *testing.T) {
	r := startRelay(t, echoServer(t), Params{Rate: 1e6}, Params{}, 1)
	tr := Trace{{0, 5e6}, {150 * time.Millisecond, 50e6}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); r.FollowTrace(ctx, Up, tr) }()
	waitFor(t, time.Second, "first step", func() bool { return r.Params(Up).Rate == 5e6 })
	waitFor(t, 2*time.Second, "second step", func() bool { return r.Params(Up).Rate == 50e6 })
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("second step applied after %v, want ≥ 150ms", d)
	}
	<-done
	if p := r.Params(Down); p.Rate != 0 {
		t.Errorf("trace on up changed down: %v", p)
	}
}
