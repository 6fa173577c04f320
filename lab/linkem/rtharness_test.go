package linkem

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The RTT test measures the relay, not the test's own goroutines: on this
// loaded two-core VM a goroutine woken through the runtime poller can wait
// milliseconds for a CPU. So the echo server and the pinger are threads of
// their own, SCHED_FIFO where allowed, blocked in plain syscalls, and the
// reply's arrival time is the kernel's receive stamp.

func rtSocket(t testing.TB) (int, netip.AddrPort) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
}

// rtEcho returns every datagram to its sender from a realtime thread.
func rtEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	fd, addr := rtSocket(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread may be realtime
		_ = setRealtime()
		buf := make([]byte, 65536)
		for {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || from == nil {
				return // shut down
			}
			_ = unix.Sendto(fd, buf[:n], 0, from)
		}
	}()
	t.Cleanup(func() {
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
		<-done
		unix.Close(fd)
	})
	return addr
}

// rtPings sends n pings, one at a time, to dst from a realtime thread and
// returns their round-trip times (send to kernel receive stamp).
func rtPings(t testing.TB, dst netip.AddrPort, n int, timeout time.Duration) []time.Duration {
	t.Helper()
	fd, _ := rtSocket(t)
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(timeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	type result struct {
		rtts []time.Duration
		err  error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		_ = setRealtime()
		var rtts []time.Duration
		out, in := make([]byte, 64), make([]byte, 64)
		oob := make([]byte, 64)
		for seq := range uint64(n) {
			binary.BigEndian.PutUint64(out, seq)
			sent := time.Now().UnixNano()
			if _, err := unix.Write(fd, out); err != nil {
				res <- result{rtts, fmt.Errorf("ping %d: write: %w", seq, err)}
				return
			}
			for {
				m, oobn, _, _, err := unix.Recvmsg(fd, in, oob, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					res <- result{rtts, fmt.Errorf("ping %d: %w", seq, err)}
					return
				}
				if m != len(out) || binary.BigEndian.Uint64(in) != seq {
					continue // a late answer to an earlier ping
				}
				recv := time.Now().UnixNano()
				if oobn >= unix.CmsgLen(16) {
					h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
					if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS {
						recv = (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)])).Nano()
					}
				}
				rtts = append(rtts, time.Duration(recv-sent))
				break
			}
		}
		res <- result{rtts, nil}
	}()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.rtts
}
