package vmbench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/lab/traces"
	"github.com/lifeline-router/lifeline/sqm"
)

// fakeBackend records SetRate calls; the oracle needs no kernel.
type fakeBackend struct {
	sqm.Backend
	mu    sync.Mutex
	calls []string
}

func (f *fakeBackend) SetRate(dev string, dir sqm.Dir, bps uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s %d", dev, dir, bps))
	return nil
}

// The oracle sets both directions to OracleShare of each trace point, in order, at the
// point's time.
func TestOracleFollowsTrace(t *testing.T) {
	tr := traces.Trace{Name: "t", Points: []traces.Point{{At: 0, Up: 20e6, Down: 40e6}, {At: 30 * time.Millisecond, Up: 80e6, Down: 10e6}}}
	fb := &fakeBackend{}
	rec := &recorder{Backend: fb, start: time.Now()}
	start := time.Now()
	if err := followOracle(context.Background(), tr, start, OracleShare, rec); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Errorf("returned after %v, before the second point", el)
	}
	want := []string{
		Uplink + " egress 19000000", Uplink + " ingress 38000000",
		Uplink + " egress 76000000", Uplink + " ingress 9500000",
	}
	if len(fb.calls) != len(want) {
		t.Fatalf("SetRate calls %q, want %q", fb.calls, want)
	}
	for i := range want {
		if fb.calls[i] != want[i] {
			t.Errorf("call %d: %q, want %q", i, fb.calls[i], want[i])
		}
	}
	up, down := rec.rates()
	if up != 0.95*80e6 || down != 0.95*10e6 {
		t.Errorf("recorded rates %v/%v, want the last point's", up, down)
	}
}
