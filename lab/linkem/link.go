package linkem

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
)

// maxQueue bounds the datagrams one direction holds (waiting plus in
// flight), so an unlimited Buffer cannot eat the host's memory.
const maxQueue = 1 << 18

// sendBatch is how many due datagrams one wake-up hands to sendmmsg.
const sendBatch = 64

// pkt is one datagram held by a link. Slots are reused; buf keeps its
// capacity.
type pkt struct {
	buf     []byte
	size    int   // bytes on the wire: len(buf) + Overhead at arrival
	arrive  int64 // monoNow at arrival
	dep     int64 // departure, set when the datagram departs
	deliver int64 // departure + delay
	up      *upstream
	dst     netip.AddrPort
}

// inPkt is a datagram handed to link.enqueue.
type inPkt struct {
	data []byte
	at   int64 // arrival, monoNow scale
	up   *upstream
	dst  netip.AddrPort
}

// sink writes delivered datagrams; it owns the sockets of one direction.
type sink interface {
	send(batch []*pkt) error
}

// counters are read by Stats without the link's lock.
type counters struct {
	packets, bytes, dropped, lost, blackholed, sendErrors atomic.Uint64
	// lateNs sums how long after its due time each datagram was handed to
	// the kernel, lateMax the worst: the emulator's own timing error.
	lateNs, lateMax atomic.Uint64
}

// link is one direction of the emulated path. The ring holds datagrams
// in arrival order in two stretches: [head, ser) have left the bottleneck
// and wait out their propagation delay; [ser, tail) wait for (or are in)
// serialization. Departure times are computed lazily from the current rate,
// so a live rate change applies to every datagram still queued.
type link struct {
	dir Direction

	mu      sync.Mutex
	p       Params
	rng     *rand.Rand
	ring    []*pkt
	mask    uint64
	head    uint64
	ser     uint64
	tail    uint64
	lastDep int64
	waiting int   // bytes (with overhead) in [ser, tail)
	armed   int64 // timer expiry currently set, 0 when none
	closed  bool
	tm      *timer
	out     []*pkt

	c  counters
	rt atomic.Bool // delivering from a SCHED_FIFO thread
	// coalesce delays each wake-up by up to this much so that datagrams due
	// close together leave in one sendmmsg: a little lateness for far
	// fewer wake-ups at high packet rates.
	coalesce int64
}

func newLink(dir Direction, p Params, seed uint64) (*link, error) {
	tm, err := newTimer()
	if err != nil {
		return nil, err
	}
	l := &link{
		dir:  dir,
		p:    p.clamp(),
		rng:  rand.New(rand.NewPCG(seed, uint64(dir)+0x9e3779b97f4a7c15)),
		ring: make([]*pkt, 1024),
		mask: 1023,
		tm:   tm,
		out:  make([]*pkt, 0, sendBatch),
	}
	for i := range l.ring {
		l.ring[i] = new(pkt)
	}
	return l, nil
}

// serTime is the serialization time of n bytes at the current rate.
func (l *link) serTime(n int) int64 {
	if l.p.Rate == 0 {
		return 0
	}
	return int64(uint64(n) * 8e9 / l.p.Rate)
}

// advance moves every datagram whose serialization has ended by now into
// the propagation stretch. Departures chain on the previous departure, not
// on when the goroutine happened to wake, so late wake-ups do not slow the
// line down.
func (l *link) advance(now int64) {
	for l.ser < l.tail {
		q := l.ring[l.ser&l.mask]
		dep := max(q.arrive, l.lastDep) + l.serTime(q.size)
		if dep > now {
			return
		}
		q.dep, q.deliver = dep, dep+int64(l.p.Delay)
		l.lastDep = dep
		l.waiting -= q.size
		l.ser++
	}
}

// waitingAt is the bytes that were waiting for serialization at time at,
// which may be before the last advance: the buffer is judged as it was
// when a datagram arrived, not when a (late) reader got to it. Datagrams
// already delivered are not counted back, so a reader stalled for longer
// than the delay finds the buffer a little emptier than it was.
func (l *link) waitingAt(at int64) int {
	w := l.waiting
	for i, n := l.ser, 0; i > l.head && n < 256; n++ {
		i--
		q := l.ring[i&l.mask]
		if q.dep <= at {
			break
		}
		w += q.size
	}
	return w
}

// next is the time the link goroutine must wake next, or 0.
func (l *link) next() int64 {
	var t int64
	if l.head < l.ser {
		t = l.ring[l.head&l.mask].deliver
	}
	if l.ser < l.tail {
		q := l.ring[l.ser&l.mask]
		d := max(q.arrive, l.lastDep) + l.serTime(q.size) + int64(l.p.Delay)
		if t == 0 || d < t {
			t = d
		}
	}
	return t
}

// rearm sets the timer if the next event is earlier than the one armed.
// Called with mu held.
func (l *link) rearm() {
	if l.closed {
		return
	}
	t := l.next()
	if t == 0 {
		return
	}
	if l.tail-l.head > 1 {
		// A stream, not a lone probe: trade a little lateness for
		// batches (see Relay.Coalesce).
		t += l.coalesce
	}
	if l.armed != 0 && l.armed <= t {
		return
	}
	if l.tm.arm(t) == nil {
		l.armed = t
	}
}

// kick wakes the link goroutine at once (parameters changed). mu held.
func (l *link) kick() {
	if l.closed {
		return
	}
	if l.tm.arm(1) == nil {
		l.armed = 1
	}
}

// grow doubles the ring, keeping the absolute indices valid.
func (l *link) grow() bool {
	n := uint64(len(l.ring))
	if n >= maxQueue {
		return false
	}
	ring := make([]*pkt, 2*n)
	mask := 2*n - 1
	for i := l.head; i < l.tail; i++ {
		ring[i&mask] = l.ring[i&l.mask]
	}
	for i := range ring {
		if ring[i] == nil {
			ring[i] = new(pkt)
		}
	}
	l.ring, l.mask = ring, mask
	return true
}

// readPace is the longest a busy direction's reader pauses between reads.
const readPace = 250_000 // ns

// enqueue admits a batch of datagrams that arrived by now. It returns how
// long the reader may pause before reading again (see pause).
func (l *link) enqueue(now int64, in []inPkt) (pause int64) {
	var lost, bh, dropped uint64
	l.mu.Lock()
	p := &l.p
	for i := range in {
		switch {
		case p.Blackhole:
			bh++
			continue
		case p.Loss > 0 && l.rng.Float64() < p.Loss:
			lost++
			continue
		}
		at := min(in[i].at, now)
		l.advance(at)
		size := len(in[i].data) + p.Overhead
		if w := l.waitingAt(at); w > 0 && p.Buffer > 0 && w+size > p.Buffer {
			dropped++
			continue
		}
		if l.tail-l.head == uint64(len(l.ring)) && !l.grow() {
			dropped++
			continue
		}
		q := l.ring[l.tail&l.mask]
		q.buf = append(q.buf[:0], in[i].data...)
		q.size = size
		q.arrive, q.deliver = at, 0
		q.up, q.dst = in[i].up, in[i].dst
		l.waiting += size
		l.tail++
	}
	l.advance(now)
	l.rearm()
	pause = l.pause()
	l.mu.Unlock()
	if lost != 0 {
		l.c.lost.Add(lost)
	}
	if bh != 0 {
		l.c.blackholed.Add(bh)
	}
	if dropped != 0 {
		l.c.dropped.Add(dropped)
	}
	return pause
}

// pause: a busy direction's reader may leave datagrams in the socket
// for a while and take them in one recvmmsg, because each carries its
// kernel arrival stamp; half the delay bounds the pause so a datagram is
// still queued before it is due. mu held.
func (l *link) pause() int64 {
	if l.coalesce == 0 || l.tail-l.head < 2 {
		return 0
	}
	return min(readPace, int64(l.p.Delay)/2)
}

func (l *link) set(p Params) {
	l.mu.Lock()
	l.p = p.clamp()
	l.kick()
	l.mu.Unlock()
}

func (l *link) params() Params {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p
}

// queued returns the bytes waiting for serialization and datagrams in
// flight.
func (l *link) queued() (waiting, inFlight int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.advance(monoNow())
	return l.waiting, int(l.ser - l.head)
}

// run delivers datagrams as they come due until close. With realtime it
// first tries to become a SCHED_FIFO thread that blocks on the timerfd in
// the kernel, so a loaded host (the lab runs wireguard-go and MPTCP
// senders on the same cores) does not delay the wake-up; otherwise it
// waits through the runtime poller.
func (l *link) run(s sink, realtime bool) {
	wait := l.tm.wait
	if realtime {
		// Once realtime, never unlocked: the runtime discards the thread
		// when run returns, so its scheduling class cannot leak to other
		// goroutines.
		runtime.LockOSThread()
		if setRealtime() != nil {
			runtime.UnlockOSThread() // an ordinary thread: no need to pin
		} else {
			l.rt.Store(true)
			if l.tm.blocking() == nil {
				wait = l.tm.waitBlocking
			}
		}
	} else {
		l.rt.Store(isRealtime())
	}
	for {
		if err := wait(); err != nil {
			return
		}
		for {
			l.mu.Lock()
			if l.closed {
				l.mu.Unlock()
				return
			}
			l.armed = 0
			now := monoNow()
			l.advance(now)
			l.out = l.out[:0]
			black := l.p.Blackhole
			for i := l.head; i < l.ser && len(l.out) < sendBatch; i++ {
				q := l.ring[i&l.mask]
				if q.deliver > now {
					break
				}
				l.out = append(l.out, q)
			}
			l.mu.Unlock()
			// Slots in [head, head+len(out)) are not reused until head
			// moves, so they are read here without the lock.
			n := len(l.out)
			if n > 0 && !black {
				var bytes, late, worst uint64
				for _, q := range l.out {
					bytes += uint64(len(q.buf))
					d := uint64(max(now-q.deliver, 0))
					late += d
					worst = max(worst, d)
				}
				if err := s.send(l.out); err != nil && isClosed(err) {
					return
				}
				l.c.packets.Add(uint64(n))
				l.c.bytes.Add(bytes)
				l.c.lateNs.Add(late)
				if worst > l.c.lateMax.Load() {
					l.c.lateMax.Store(worst) // one writer: no lost update
				}
			} else if n > 0 {
				l.c.blackholed.Add(uint64(n))
			}
			l.mu.Lock()
			for _, q := range l.out {
				q.up = nil // let an expired upstream be collected
			}
			l.head += uint64(n)
			more := n == sendBatch
			if !more {
				l.rearm()
			}
			l.mu.Unlock()
			if !more {
				break
			}
		}
	}
}

// close makes run return; the timer itself is closed by closeTimer once
// run has returned (a thread blocked in poll(2) is not woken by close(2)).
func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		_ = l.tm.arm(1)
		l.closed = true
	}
}

func (l *link) closeTimer() { _ = l.tm.close() }
