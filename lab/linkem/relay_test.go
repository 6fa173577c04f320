package linkem

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"
)

// ping sends one datagram through the relay to the echo server and returns
// the round-trip time, or an error if nothing came back within timeout.
func ping(c *net.UDPConn, seq uint64, timeout time.Duration) (time.Duration, error) {
	var out, in [64]byte
	binary.BigEndian.PutUint64(out[:], seq)
	start := time.Now()
	if _, err := c.Write(out[:]); err != nil {
		return 0, err
	}
	if err := c.SetReadDeadline(start.Add(timeout)); err != nil {
		return 0, err
	}
	for {
		n, err := c.Read(in[:])
		if err != nil {
			return 0, err
		}
		if n == len(out) && binary.BigEndian.Uint64(in[:]) == seq {
			return time.Since(start), nil
		}
		// A late answer to an earlier ping: keep waiting for ours.
	}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(math.Round(p*float64(len(sorted)-1)))]
}

func TestRTT(t *testing.T) {
	echo := rtEcho(t)
	base := rtPings(t, echo, 50, time.Second)
	slices.Sort(base)
	t.Logf("loopback without relay: median %v p90 %v", pct(base, .5), pct(base, .9))

	for _, tc := range []struct {
		name     string
		rtt      time.Duration
		n        int
		realtime bool
	}{
		{"5ms", 5 * time.Millisecond, 200, true},
		{"40ms", 40 * time.Millisecond, 40, true},
		// Without SCHED_FIFO (no CAP_SYS_NICE) the runtime poller wakes
		// the delivery goroutine.
		{"5ms-poller", 5 * time.Millisecond, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Params{Rate: 220e6, Delay: tc.rtt / 2, Buffer: 1 << 20}
			r := startRelay(t, echo, p, p, 1, func(r *Relay) { r.Realtime = tc.realtime })
			rtts := rtPings(t, r.Addr(), tc.n, time.Second)
			slices.Sort(rtts)
			med := pct(rtts, .5)
			tol := max(tc.rtt/10, time.Millisecond)
			t.Logf("set %v: min %v median %v (%+v) p90 %v max %v; tolerance %v", tc.rtt,
				rtts[0], med, med-tc.rtt, pct(rtts, .9), rtts[len(rtts)-1], tol)
			s := r.Stats()
			t.Logf("relay's own lateness (realtime %v): up mean %v max %v, down mean %v max %v", s.Realtime,
				s.LateMean[Up], s.LateMax[Up], s.LateMean[Down], s.LateMax[Down])
			if rtts[0] < tc.rtt {
				t.Errorf("min RTT %v is below the configured %v: delivered early", rtts[0], tc.rtt)
			}
			if d := med - tc.rtt; d < -tol || d > tol {
				t.Errorf("median RTT %v, want %v ± %v", med, tc.rtt, tol)
			}
		})
	}
}

// measureRate returns the rate (bit/s) arriving at cnt, by the datagrams'
// kernel arrival stamps: the median of five 300 ms windows after settle,
// so one stall of the host (this VM sees up to ~100 ms of steal) that
// shifts datagrams from one window into the next cannot skew it.
func measureRate(cnt *counter, settle time.Duration) float64 {
	time.Sleep(settle)
	const window = 300 * time.Millisecond
	start := time.Now()
	time.Sleep(5*window + 50*time.Millisecond) // and let the reader catch up
	var rates []float64
	for i := range 5 {
		from := start.Add(time.Duration(i) * window)
		rates = append(rates, cnt.rate(from, from.Add(window)))
	}
	slices.Sort(rates)
	return rates[2]
}

func within(got, want, frac float64) bool { return math.Abs(got-want) <= frac*want }

func TestThroughputAndLiveSet(t *testing.T) {
	target, cnt := countServer(t)
	// A deep buffer (≥ 250 ms at either rate) absorbs the bursts of a
	// sender that a loaded host stalls now and then, so the bottleneck
	// never idles.
	p := Params{Rate: 10e6, Delay: 5 * time.Millisecond, Buffer: 1 << 20}
	r := startRelay(t, target, p, p, 1)
	c := dial(t, r)
	stop := make(chan struct{})
	// Offer 45 Mbit/s: above both rates.
	wg := sendPaced(c, 1400, 45e6, stop)
	defer wg.Wait()
	defer close(stop)

	got := measureRate(cnt, 300*time.Millisecond)
	t.Logf("rate 10mbit: measured %.3f Mbit/s", got/1e6)
	if !within(got, 10e6, 0.03) {
		t.Errorf("measured %.3f Mbit/s through a 10mbit link, want within 3%%", got/1e6)
	}
	if s := r.Stats(); s.Dropped[Up] == 0 || s.Queued[Up] > p.Buffer {
		t.Errorf("stats %+v: want drops (offered load above rate) and queue ≤ %d", s, p.Buffer)
	}

	p.Rate = 30e6
	r.Set(Up, p)
	if got := r.Params(Up); got != p {
		t.Fatalf("Params after Set = %v, want %v", got, p)
	}
	got = measureRate(cnt, 100*time.Millisecond)
	t.Logf("rate 30mbit after Set: measured %.3f Mbit/s; %+v", got/1e6, r.Stats())
	if !within(got, 30e6, 0.03) {
		t.Errorf("measured %.3f Mbit/s after Set to 30mbit, want within 3%%", got/1e6)
	}
}

func TestSetKeepsQueue(t *testing.T) {
	target, cnt := countServer(t)
	// 200 kbit/s and a deep buffer: a burst of 50 × 1000 B takes 2 s.
	p := Params{Rate: 200e3, Buffer: 1 << 20}
	r := startRelay(t, target, p, Params{}, 1)
	c := dial(t, r)
	buf := make([]byte, 1000)
	for range 50 {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Second, "burst queued", func() bool { return r.Stats().Queued[Up] > 30_000 })
	start := time.Now()
	p.Rate = 100e6
	r.Set(Up, p)
	waitFor(t, 2*time.Second, "queued datagrams delivered", func() bool { return cnt.packets.Load() == 50 })
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("queue drained %v after the rate went up 500×, want well under the 2 s at the old rate", d)
	}
	if s := r.Stats(); s.Dropped[Up] != 0 || s.Packets[Up] != 50 {
		t.Errorf("stats %+v: want 50 delivered, none dropped", s)
	}
}

func TestBufferOverflow(t *testing.T) {
	target, cnt := countServer(t)
	// 1000 B at 1 Mbit/s is 8 ms on the line; the buffer holds 10. The
	// delay keeps departed datagrams in view, so the buffer is judged as of
	// each arrival even if the relay's reader is stalled (see waitingAt).
	p := Params{Rate: 1e6, Buffer: 10_000, Delay: 200 * time.Millisecond}
	r := startRelay(t, target, p, Params{}, 1)
	c := dial(t, r)
	buf := make([]byte, 1000)
	start := time.Now()
	for range 100 {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	burst := time.Since(start)
	waitFor(t, 5*time.Second, "all 100 accounted for", func() bool {
		s := r.Stats()
		return s.Dropped[Up]+s.Packets[Up] == 100 && s.Queued[Up] == 0 && s.InFlight[Up] == 0
	})
	s := r.Stats()
	// Each 8 ms of burst lets one more datagram in.
	maxAdmitted := 10 + int(burst/(8*time.Millisecond)) + 1
	t.Logf("burst took %v: delivered %d dropped %d", burst, s.Packets[Up], s.Dropped[Up])
	if s.Packets[Up] < 10 || int(s.Packets[Up]) > maxAdmitted {
		t.Errorf("delivered %d of a 100-datagram burst into a 10-datagram buffer, want 10..%d", s.Packets[Up], maxAdmitted)
	}
	waitFor(t, time.Second, "receiver count", func() bool { return cnt.packets.Load() == s.Packets[Up] })
}

func TestLoss(t *testing.T) {
	const n, loss = 3000, 0.1
	lost := func(seed uint64) uint64 {
		target, cnt := countServer(t)
		r := startRelay(t, target, Params{Loss: loss}, Params{}, seed)
		c := dial(t, r)
		buf := make([]byte, 200)
		for i := range n {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
			if i%100 == 99 { // let the kernel's socket buffers drain
				want := uint64(i + 1)
				waitFor(t, 2*time.Second, "relay caught up", func() bool {
					s := r.Stats()
					return s.Packets[Up]+s.Lost[Up] == want
				})
			}
		}
		s := r.Stats()
		waitFor(t, time.Second, "receiver count", func() bool { return cnt.packets.Load() == s.Packets[Up] })
		return s.Lost[Up]
	}
	l1 := lost(42)
	// Binomial(3000, 0.1): mean 300, sd 16.4; allow 5 sd.
	if math.Abs(float64(l1)-n*loss) > 5*math.Sqrt(n*loss*(1-loss)) {
		t.Errorf("lost %d of %d at loss %v, want about %v", l1, n, loss, n*loss)
	}
	if l2 := lost(42); l2 != l1 {
		t.Errorf("same seed lost %d then %d: loss is not reproducible", l1, l2)
	}
	t.Logf("lost %d of %d (%.2f%%) at loss %v", l1, n, 100*float64(l1)/n, loss)
}

func TestBlackhole(t *testing.T) {
	echo := echoServer(t)
	p := Params{Delay: 50 * time.Millisecond}
	r := startRelay(t, echo, p, p, 1)
	c := dial(t, r)
	if _, err := ping(c, 1, time.Second); err != nil {
		t.Fatalf("ping before blackhole: %v", err)
	}
	// One datagram in flight when the blackhole starts dies with the path.
	if _, err := c.Write(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "datagram in flight", func() bool { return r.Stats().InFlight[Up] == 1 })
	r.Blackhole(true)
	if !r.Params(Up).Blackhole || !r.Params(Down).Blackhole {
		t.Fatal("Blackhole(true) did not set both directions")
	}
	for i := range 5 {
		_, err := ping(c, uint64(10+i), 300*time.Millisecond) // RTT is 100 ms
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("ping %d through blackhole: err %v, want a timeout", i, err)
		}
	}
	s := r.Stats()
	if s.Blackholed[Up] != 6 {
		t.Errorf("blackholed %d upstream, want 6 (5 pings + 1 in flight)", s.Blackholed[Up])
	}
	r.Blackhole(false)
	if _, err := ping(c, 100, time.Second); err != nil {
		t.Fatalf("ping after recovery: %v", err)
	}
}

func TestClientsAndExpiry(t *testing.T) {
	echo := echoServer(t)
	r, err := NewRelay(loopback, echo, Params{}, Params{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.IdleTimeout = 300 * time.Millisecond
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	a, b := dial(t, r), dial(t, r)
	for i := range 3 {
		if _, err := ping(a, uint64(i), time.Second); err != nil {
			t.Fatalf("client a: %v", err)
		}
		if _, err := ping(b, uint64(i), time.Second); err != nil {
			t.Fatalf("client b: %v", err)
		}
	}
	if n := r.Stats().Clients; n != 2 {
		t.Errorf("clients = %d, want 2", n)
	}
	waitFor(t, 3*time.Second, "idle mappings expired", func() bool { return r.Stats().Clients == 0 })
	if _, err := ping(a, 99, time.Second); err != nil {
		t.Fatalf("client a after expiry: %v", err)
	}
}

func TestIPv6(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	c.Close()
	echo := echoServer(t, netip.MustParseAddrPort("[::1]:0"))
	p := Params{Delay: time.Millisecond}
	r := startRelay(t, echo, p, p, 1)
	if !r.Addr().Addr().Is6() {
		t.Fatalf("relay listens on %v, want ::1", r.Addr())
	}
	if d, err := ping(dial(t, r), 1, time.Second); err != nil || d < 2*time.Millisecond {
		t.Errorf("ping over IPv6: %v, %v; want ≥ 2ms", d, err)
	}
}

func TestCloseUnrun(t *testing.T) {
	r, err := NewRelay(loopback, echoServer(t), Params{}, Params{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Error("Run after Close: no error")
	}
	// The port is free again.
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatalf("port still bound after Close: %v", err)
	}
	c.Close()
}

func TestNewRelayErrors(t *testing.T) {
	echo := echoServer(t)
	for _, tc := range []struct {
		name     string
		up, down Params
		want     string
	}{
		{"loss", Params{Loss: 1.5}, Params{}, "up: loss"},
		{"buffer", Params{}, Params{Buffer: -1}, "down: buffer"},
		{"delay", Params{Delay: -time.Second}, Params{}, "up: delay"},
	} {
		_, err := NewRelay(loopback, echo, tc.up, tc.down, 1)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to name %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewRelay(loopback, netipZero, Params{}, Params{}, 1); err == nil {
		t.Error("NewRelay without a target: no error")
	}
}

// TestSteadyStateAllocs: the per-datagram paths allocate nothing once warm,
// so the rate a relay sustains is not bounded by the garbage collector.
func TestSteadyStateAllocs(t *testing.T) {
	// Batch socket I/O: sendmmsg out, recvmmsg (with stamps) in.
	sink := listenUDP(t)
	src := listenUDP(t)
	rd, err := newBatchConn(sink, readBatch, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rd.enableStamps()
	wr, err := newBatchConn(src, sendBatch, 0)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1400)
	dst := addrOf(sink)
	roundTrip := func() {
		for i := range 8 {
			wr.setMsg(i, payload, dst)
		}
		if err := wr.write(8); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 8; {
			n, err := rd.read()
			if err != nil {
				t.Fatal(err)
			}
			realNs, now := clockPair()
			for i := range n {
				_ = rd.source(i)
				_ = rd.arrival(i, realNs, now, now)
			}
			got += n
		}
	}
	roundTrip()
	if a := testing.AllocsPerRun(100, roundTrip); a != 0 {
		t.Errorf("batch send+receive of 8 datagrams: %v allocations, want 0", a)
	}

	// The link: admission, departure, collection for delivery.
	l, err := newLink(Up, Params{Rate: 100e6, Delay: time.Millisecond, Buffer: 1 << 20, Loss: 0.01}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.closeTimer()
	in := make([]inPkt, readBatch)
	for i := range in {
		in[i] = inPkt{data: payload, dst: dst}
	}
	step := func() {
		now := monoNow()
		for i := range in {
			in[i].at = now
		}
		_ = l.enqueue(now, in)
		l.mu.Lock()
		l.advance(now + int64(time.Second))
		l.head = l.ser // as if delivered
		l.mu.Unlock()
	}
	for range 2 * len(l.ring) / len(in) { // every slot gets its buffer
		step()
	}
	if a := testing.AllocsPerRun(100, step); a != 0 {
		t.Errorf("link enqueue+departure of %d datagrams: %v allocations, want 0", len(in), a)
	}
}
