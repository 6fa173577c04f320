package linkem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Clock: nanoseconds on CLOCK_MONOTONIC, the clock timerfd deadlines are
// set on. time.Since reads the same clock through the vDSO, so one offset
// taken at start-up converts between the two without a syscall per read.
var (
	clockBase     = time.Now()
	clockBaseMono = func() int64 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			panic(fmt.Sprintf("ClockGettime(CLOCK_MONOTONIC): %v", err))
		}
		return ts.Nano()
	}()
)

func monoNow() int64 { return clockBaseMono + int64(time.Since(clockBase)) }

// timer is a timerfd read through the runtime poller: it wakes within tens of
// microseconds, where a Go timer with an idle runtime can be a millisecond
// late (epoll_wait's timeout is in milliseconds).
type timer struct {
	fd  int
	f   *os.File
	buf [8]byte
}

func newTimer() (*timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("TimerfdCreate(CLOCK_MONOTONIC): %w", err)
	}
	return &timer{fd: fd, f: os.NewFile(uintptr(fd), "linkem-timerfd")}, nil
}

// arm sets the absolute expiry (monoNow scale); a time in the past fires
// at once. The caller serializes arm with close.
func (t *timer) arm(at int64) error {
	if at <= 0 {
		at = 1 // zero would disarm
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(at)}
	if err := unix.TimerfdSettime(t.fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		return fmt.Errorf("TimerfdSettime(%d): %w", at, err)
	}
	return nil
}

// wait blocks until the timer fires or is closed.
func (t *timer) wait() error {
	_, err := t.f.Read(t.buf[:])
	return err
}

// blocking switches the timerfd to blocking reads for waitBlocking; it is
// then never read through the poller again.
func (t *timer) blocking() error {
	if err := unix.SetNonblock(t.fd, false); err != nil {
		return fmt.Errorf("SetNonblock(timerfd, false): %w", err)
	}
	return nil
}

// waitBlocking blocks the calling thread in read(2) until the timer fires:
// the kernel wakes a realtime thread at once, with no other thread (the
// runtime's netpoller) in between.
func (t *timer) waitBlocking() error {
	for {
		_, err := unix.Read(t.fd, t.buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read(timerfd): %w", err)
		}
		return nil
	}
}

func (t *timer) close() error { return t.f.Close() }

// rtPriority is low among realtime priorities: above every normal task,
// below the kernel's own realtime threads.
const rtPriority = 10

// setRealtime makes the calling thread SCHED_FIFO. It fails without
// CAP_SYS_NICE or where the cgroup grants no realtime budget.
func setRealtime() error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: rtPriority}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		return fmt.Errorf("SchedSetAttr(SCHED_FIFO, %d): %w", rtPriority, err)
	}
	return nil
}

// mmsghdr is struct mmsghdr; Go pads it to the C layout on every arch.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// batchConn reads and writes batches of datagrams with recvmmsg/sendmmsg
// into buffers it owns, so the relay allocates nothing per datagram.
// Not safe for concurrent use: each socket has one reader and one writer,
// each with its own batchConn.
type batchConn struct {
	rc     syscall.RawConn
	family int // of the socket: unix.AF_INET or unix.AF_INET6
	hdrs   []mmsghdr
	iovs   []unix.Iovec
	names  []unix.RawSockaddrInet6 // large enough for both families
	bufs   [][]byte
	oob    []byte // per message: room for one SCM_TIMESTAMPNS
	stamps bool

	// State for the RawConn callbacks, which are method values bound once.
	off, cnt int
	errno    syscall.Errno
	readFn   func(uintptr) bool
	writeFn  func(uintptr) bool
	// writeErrs counts datagrams sendmmsg refused (e.g. ECONNREFUSED after
	// an ICMP port unreachable); they are skipped, as a router would.
	writeErrs uint64
}

func newBatchConn(c *net.UDPConn, batch, bufSize int) (*batchConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("SyscallConn(%v): %w", c.LocalAddr(), err)
	}
	la, _ := c.LocalAddr().(*net.UDPAddr)
	fam := unix.AF_INET6
	if la != nil && la.IP.To4() != nil {
		fam = unix.AF_INET
	}
	b := &batchConn{
		rc:     rc,
		family: fam,
		hdrs:   make([]mmsghdr, batch),
		iovs:   make([]unix.Iovec, batch),
		names:  make([]unix.RawSockaddrInet6, batch),
	}
	if bufSize > 0 {
		b.bufs = make([][]byte, batch)
		for i := range b.bufs {
			b.bufs[i] = make([]byte, bufSize)
		}
	}
	b.readFn = b.doRead
	b.writeFn = b.doWrite
	return b, nil
}

var oobSize = unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))

// enableStamps asks the kernel for each datagram's arrival time, so a
// reader that wakes late (a loaded host) does not delay the datagram.
func (b *batchConn) enableStamps() {
	var err error
	if cerr := b.rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); cerr != nil || err != nil {
		return // the receive time is used instead
	}
	b.oob = make([]byte, oobSize*len(b.hdrs))
	b.stamps = true
}

// arrival is datagram i's kernel arrival time on the monoNow scale, or
// fallback. SCM_TIMESTAMPNS is CLOCK_REALTIME, converted with one pair of
// clock readings per batch (realNs, monoNs taken together).
func (b *batchConn) arrival(i int, realNs, monoNs, fallback int64) int64 {
	if !b.stamps || int(b.hdrs[i].hdr.Controllen) < unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
		return fallback
	}
	c := b.oob[i*oobSize:]
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	if h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_TIMESTAMPNS {
		return fallback
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&c[unix.CmsgLen(0)]))
	at := ts.Nano() - realNs + monoNs
	if at > fallback || at < fallback-int64(time.Second) {
		return fallback // clock stepped: do not trust the stamp
	}
	return at
}

// read fills up to len(bufs) datagrams; datagram i is bufs[i][:b.hdrs[i].n],
// its source b.source(i).
func (b *batchConn) read() (int, error) {
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(len(b.bufs[i]))
		h := &b.hdrs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&b.names[i])), Namelen: unix.SizeofSockaddrInet6, Iov: &b.iovs[i]}
		h.SetIovlen(1)
		if b.stamps {
			h.Control = &b.oob[i*oobSize]
			h.SetControllen(oobSize)
		}
	}
	b.cnt, b.errno = 0, 0
	if err := b.rc.Read(b.readFn); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", b.errno)
	}
	return b.cnt, nil
}

func (b *batchConn) doRead(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), 0, 0, 0)
		switch e {
		case 0:
			b.cnt = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		b.errno = e
		return true
	}
}

// truncated reports whether datagram i did not fit its buffer.
func (b *batchConn) truncated(i int) bool { return b.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 }

func (b *batchConn) source(i int) netip.AddrPort {
	sa := &b.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// setMsg points message i at data, to dst unless dst is the zero value
// (connected socket).
func (b *batchConn) setMsg(i int, data []byte, dst netip.AddrPort) {
	b.iovs[i].Base = nil
	if len(data) > 0 {
		b.iovs[i].Base = &data[0]
	}
	b.iovs[i].SetLen(len(data))
	h := &b.hdrs[i].hdr
	*h = unix.Msghdr{Iov: &b.iovs[i]}
	h.SetIovlen(1)
	if !dst.IsValid() {
		return
	}
	sa := &b.names[i]
	port := dst.Port()
	if b.family == unix.AF_INET && dst.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.Addr().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		h.Name, h.Namelen = (*byte)(unsafe.Pointer(sa4)), unix.SizeofSockaddrInet4
		return
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.Addr().As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	h.Name, h.Namelen = (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6
}

// write sends messages [0, n) prepared with setMsg. A datagram the kernel
// refuses is skipped and counted in writeErrs; only a closed socket is an
// error.
func (b *batchConn) write(n int) error {
	b.off, b.cnt = 0, n
	for b.off < b.cnt {
		b.errno = 0
		if err := b.rc.Write(b.writeFn); err != nil {
			return err
		}
		if b.errno != 0 {
			b.writeErrs++
			b.off++ // skip the datagram sendmmsg failed on
		}
	}
	return nil
}

func (b *batchConn) doWrite(fd uintptr) bool {
	for b.off < b.cnt {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.off])), uintptr(b.cnt-b.off), 0, 0, 0)
		switch e {
		case 0:
			b.off += int(n)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		b.errno = e
		return true
	}
	return true
}

// growSocketBuffers asks for deep socket buffers so bursts at line rate are
// not dropped by the kernel before the model sees them; with CAP_NET_ADMIN
// the *FORCE options pass rmem_max/wmem_max. Best effort.
func growSocketBuffers(c *net.UDPConn, size int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
		}
	})
}

// isClosed tells a socket closed by shutdown from a failure.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) }

// clockPair reads CLOCK_REALTIME and the monoNow clock at one instant.
func clockPair() (realNs, mono int64) {
	t := time.Now()
	return t.UnixNano(), clockBaseMono + int64(t.Sub(clockBase))
}

// isRealtime reports whether the calling thread is SCHED_FIFO (the whole
// process may have been started under chrt).
func isRealtime() bool {
	attr, err := unix.SchedGetAttr(0, 0)
	return err == nil && attr.Policy == unix.SCHED_FIFO
}

// pacer lets a reader sleep precisely (a timerfd) until a monoNow time.
type pacer struct {
	t    *timer
	stop func() bool
}

func newPacer(ctx context.Context) (*pacer, error) {
	t, err := newTimer()
	if err != nil {
		return nil, err
	}
	// Closing the timer ends a sleep when the relay stops.
	return &pacer{t: t, stop: context.AfterFunc(ctx, func() { t.close() })}, nil
}

func (p *pacer) sleep(until int64) {
	if p.t.arm(until) == nil {
		_ = p.t.wait()
	}
}

func (p *pacer) close() {
	if p.stop() {
		p.t.close()
	}
}
