package probe

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestEstimator(t *testing.T) {
	var e Estimator
	if got := e.Timeout(10 * time.Millisecond); got != time.Second {
		t.Errorf("initial timeout = %v, want 1s", got)
	}
	e.Sample(10 * time.Millisecond)
	if e.SRTT != 10*time.Millisecond || e.RTTVar != 5*time.Millisecond {
		t.Errorf("after first sample srtt=%v rttvar=%v, want 10ms/5ms", e.SRTT, e.RTTVar)
	}
	for i := 0; i < 100; i++ {
		e.Sample(10 * time.Millisecond)
	}
	if got := e.Timeout(15 * time.Millisecond); got != 15*time.Millisecond {
		t.Errorf("steady 10ms path: timeout %v, want the 15ms floor", got)
	}
	// A loaded path whose RTT swings must get a longer timeout.
	for i := 0; i < 50; i++ {
		e.Sample(time.Duration(5+20*(i%2)) * time.Millisecond)
	}
	if got := e.Timeout(15 * time.Millisecond); got <= 30*time.Millisecond {
		t.Errorf("jittery path: timeout %v, want > 30ms", got)
	}
}

func TestProberLivenessAndSilence(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := NewResponder("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	go r.Serve(rctx)
	target := netip.MustParseAddrPort(r.Addr().String())
	p, err := New(Config{Source: netip.MustParseAddr("127.0.0.1"), Target: target, Interval: 2 * time.Millisecond, MinTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	waitFor(t, "prober alive", 2*time.Second, func() bool { return p.Snapshot().Alive })
	waitFor(t, "20 answered probes", 2*time.Second, func() bool { return p.Snapshot().Received >= 20 })
	s := p.Snapshot()
	if s.SRTT <= 0 || s.SRTT > 5*time.Millisecond {
		t.Errorf("loopback srtt = %v, want (0, 5ms]", s.SRTT)
	}
	if s.Timeout < 10*time.Millisecond {
		t.Errorf("timeout %v below the configured floor", s.Timeout)
	}
	if got := p.Samples(time.Time{}); len(got) < 20 || got[0].SentAt.After(got[len(got)-1].SentAt) {
		t.Errorf("Samples: %d samples, want >= 20 in send order", len(got))
	}
	if got := p.Samples(time.Now()); len(got) != 0 {
		t.Errorf("Samples(now) = %d samples, want none", len(got))
	}
	// Silence: the responder goes away; the prober must notice within
	// its timeout plus scheduling slack.
	rcancel()
	stopped := time.Now()
	waitFor(t, "prober dead", 2*time.Second, func() bool { return !p.Snapshot().Alive })
	if took := time.Since(stopped); took > 200*time.Millisecond {
		t.Errorf("detected silence after %v, want well under 200ms", took)
	}
	waitFor(t, "loss reported", 2*time.Second, func() bool { return p.Snapshot().Loss > 0.5 })
	if op := p.OldestPending(); op <= 0 {
		t.Errorf("OldestPending = %v with a dead responder, want > 0", op)
	}
}

func TestResponderIgnoresForeignPackets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := NewResponder("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go r.Serve(ctx)
	p, err := New(Config{Source: netip.MustParseAddr("127.0.0.1"), Target: netip.MustParseAddrPort(r.Addr().String()), Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer p.conn.Close()
	p.conn.WriteToUDPAddrPort([]byte("hello, reflector"), p.cfg.Target)
	p.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 64)
	if n, _, err := p.conn.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("responder echoed a foreign packet (%d bytes)", n)
	}
}

func TestNudge(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := NewResponder("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var nudged atomic.Int32
	var failing atomic.Bool
	var got atomic.Value
	r.OnNudge = func(dead netip.Addr) error {
		if failing.Load() {
			return errors.New("no endpoint")
		}
		got.Store(dead)
		nudged.Add(1)
		return nil
	}
	go r.Serve(ctx)
	p, err := New(Config{Source: netip.MustParseAddr("127.0.0.1"), Target: netip.MustParseAddrPort(r.Addr().String()), Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	dead := netip.MustParseAddr("10.55.1.2")
	if _, err := p.Nudge(dead, time.Second); err != nil {
		t.Fatal(err)
	}
	if n := nudged.Load(); n < 1 {
		t.Fatalf("OnNudge ran %d times", n)
	}
	if g := got.Load(); g != dead {
		t.Fatalf("OnNudge got dead path %v, want %v", g, dead)
	}
	// A responder whose action fails stays silent; the caller times out.
	failing.Store(true)
	if _, err := p.Nudge(dead, 50*time.Millisecond); err == nil {
		t.Fatal("nudge answered although the action failed")
	}
}

// A prober slowed to a sparse interval and then sped up must not be judged
// dead by the new, tight timeout against old evidence.
func TestSpeedUpKeepsAlive(t *testing.T) {
	p := &Prober{cfg: Config{Interval: 300 * time.Millisecond, MinTimeout: 5 * time.Millisecond},
		answered: make([]bool, 10), sentAt: make([]time.Time, 10), ivChanged: make(chan struct{}, 1)}
	p.ever = true
	p.est.Sample(time.Millisecond)
	// The last answer is 100 ms old: fine at 300 ms intervals, far past
	// the timeout of 2 ms intervals.
	p.lastLife = time.Now().Add(-100 * time.Millisecond)
	if !p.Snapshot().Alive {
		t.Fatal("prober dead at its sparse interval")
	}
	p.SetInterval(2 * time.Millisecond)
	if !p.Snapshot().Alive {
		t.Fatal("prober dead right after its interval was shortened")
	}
}

// A pause in the evidence that ended with the path alive raises the
// silence timeout for a while, so the same stall does not cause a false
// "down" next time.
func TestObservedGapRaisesTimeout(t *testing.T) {
	p := &Prober{cfg: Config{Interval: 5 * time.Millisecond, MinTimeout: 15 * time.Millisecond}, answered: make([]bool, 10), sentAt: make([]time.Time, 10)}
	now := time.Now()
	p.ever = true
	p.est.Sample(5 * time.Millisecond)
	p.lastLife = now.Add(-100 * time.Millisecond)
	before := p.timeoutLocked()
	p.lifeLocked(now.Add(-20 * time.Millisecond)) // an 80 ms pause, then life
	after := p.timeoutLocked()
	if before != 17500*time.Microsecond {
		t.Fatalf("timeout before the pause = %v, want 17.5ms (3.5 intervals)", before)
	}
	if after != 100*time.Millisecond {
		t.Fatalf("timeout after an 80ms pause = %v, want 100ms (1.25 x the pause)", after)
	}
}

// An outage (a pause far beyond jitter) must not raise the timeout.
func TestOutageDoesNotRaiseTimeout(t *testing.T) {
	p := &Prober{cfg: Config{Interval: 5 * time.Millisecond, MinTimeout: 15 * time.Millisecond}, answered: make([]bool, 10), sentAt: make([]time.Time, 10)}
	now := time.Now()
	p.ever = true
	p.est.Sample(5 * time.Millisecond)
	p.lastLife = now.Add(-1200 * time.Millisecond)
	p.lifeLocked(now.Add(-10 * time.Millisecond)) // back after a 1.19 s cut
	if got := p.timeoutLocked(); got != 17500*time.Microsecond {
		t.Fatalf("timeout after a 1.19s outage = %v, want 17.5ms", got)
	}
}
