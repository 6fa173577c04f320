package linkem

import (
	"unsafe"

	"context"
	"golang.org/x/sys/unix"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// startRelay runs a relay to target for the test's lifetime.
func startRelay(t testing.TB, target netip.AddrPort, up, down Params, seed uint64, opts ...func(*Relay)) *Relay {
	t.Helper()
	r, err := NewRelay(netip.AddrPortFrom(target.Addr(), 0), target, up, down, seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func listenUDP(t testing.TB, at ...netip.AddrPort) *net.UDPConn {
	t.Helper()
	a := loopback
	if len(at) > 0 {
		a = at[0]
	}
	c, err := net.ListenUDP(udpNetwork(a.Addr()), net.UDPAddrFromAddrPort(a))
	if err != nil {
		t.Fatal(err)
	}
	growSocketBuffers(c, 4<<20)
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// echoServer returns every datagram to its sender.
func echoServer(t testing.TB, at ...netip.AddrPort) netip.AddrPort {
	t.Helper()
	c := listenUDP(t, at...)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := c.WriteToUDPAddrPort(buf[:n], from); err != nil {
				return
			}
		}
	}()
	return addrOf(c)
}

// counter is a sink that counts what reaches it, keeping each datagram's
// kernel arrival stamp so rates are measured on the wire, not on when a
// (possibly stalled) test goroutine got to read them.
type counter struct {
	packets, bytes atomic.Uint64
	mu             sync.Mutex
	arrivals       []arrival
}

type arrival struct {
	at   int64 // CLOCK_REALTIME ns
	size int
}

func countServer(t testing.TB) (netip.AddrPort, *counter) {
	t.Helper()
	c := listenUDP(t)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("SO_TIMESTAMPNS: %v", err)
	}
	cnt := &counter{}
	go func() {
		buf := make([]byte, 65536)
		oob := make([]byte, 128)
		for {
			n, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				return
			}
			at := time.Now().UnixNano()
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
						ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
						at = ts.Nano()
					}
				}
			}
			cnt.mu.Lock()
			cnt.arrivals = append(cnt.arrivals, arrival{at, n})
			cnt.mu.Unlock()
			cnt.bytes.Add(uint64(n))
			cnt.packets.Add(1)
		}
	}()
	return addrOf(c), cnt
}

// rate is the bit rate of datagrams that arrived within (from, to].
func (c *counter) rate(from, to time.Time) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var bytes int
	for _, a := range c.arrivals {
		if a.at > from.UnixNano() && a.at <= to.UnixNano() {
			bytes += a.size
		}
	}
	return float64(bytes) * 8 / to.Sub(from).Seconds()
}

// last is the arrival time of the latest datagram.
func (c *counter) last() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.arrivals) == 0 {
		return time.Time{}
	}
	return time.Unix(0, c.arrivals[len(c.arrivals)-1].at)
}

// dial returns a client socket connected to the relay.
func dial(t testing.TB, r *Relay) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP(udpNetwork(r.Addr().Addr()), nil, net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	growSocketBuffers(c, 4<<20)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// sendPaced sends size-byte datagrams on c at rate bit/s until stop closes.
func sendPaced(c *net.UDPConn, size int, rate float64, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, size)
		start := time.Now()
		sent := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			due := int(time.Since(start).Seconds() * rate / 8 / float64(size))
			for ; sent < due; sent++ {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
			time.Sleep(500 * time.Microsecond)
		}
	}()
	return &wg
}

var netipZero netip.AddrPort

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
