package linkem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const (
	readBatch = 32
	// maxDatagram fits any UDP payload, so nothing is ever truncated.
	maxDatagram = 65536
	sockBuf     = 32 << 20
)

// Relay is one emulated path: WireGuard peers send to its listen address,
// and for each peer address it keeps an upstream socket towards the target
// (a NAT-like mapping that expires after IdleTimeout), relaying the
// target's replies back to that peer. WireGuard's roaming copes with the
// relay's source address.
type Relay struct {
	// IdleTimeout closes a peer's upstream socket after this long without
	// traffic either way (default 3m; WireGuard keepalives are 25s). Set
	// it before Run.
	IdleTimeout time.Duration
	// Realtime delivers from SCHED_FIFO threads when the process may
	// (root or CAP_SYS_NICE); see Stats.Realtime. Default true; set it
	// before Run.
	Realtime bool
	// Coalesce lets a busy direction (more than one datagram queued or in
	// flight) wake up to this much after a datagram is due, so several
	// leave in one sendmmsg; a lone datagram (an idle-link probe) is
	// never delayed by it. Its readers then also pause up to 250µs (at
	// most half the delay) between reads. Default 100µs; 0 wakes exactly
	// on time and never pauses, at a higher CPU cost. Set it before Run.
	Coalesce time.Duration

	listenAddr netip.AddrPort
	target     netip.AddrPort
	lc         *net.UDPConn
	rd         *batchConn // listen socket, read by readClients
	links      [2]*link

	mu  sync.Mutex
	ups map[netip.AddrPort]*upstream
	wg  sync.WaitGroup

	ctx    context.Context // ends when Run returns
	cancel context.CancelFunc
	ran    atomic.Bool

	traceMu     sync.Mutex
	traceCancel [2]context.CancelFunc
}

// upstream is one peer's socket towards the target.
type upstream struct {
	client netip.AddrPort
	conn   *net.UDPConn
	last   atomic.Int64 // monoNow of the last datagram either way
	closed atomic.Bool
}

// NewRelay binds listen (port 0 picks one: see Addr) and prepares a relay
// to target with the given per-direction parameters. seed makes random loss
// reproducible.
func NewRelay(listen, target netip.AddrPort, up, down Params, seed uint64) (*Relay, error) {
	if !target.IsValid() || target.Port() == 0 {
		return nil, fmt.Errorf("NewRelay: target %v: want address:port", target)
	}
	if err := up.Validate(); err != nil {
		return nil, fmt.Errorf("NewRelay: up: %w", err)
	}
	if err := down.Validate(); err != nil {
		return nil, fmt.Errorf("NewRelay: down: %w", err)
	}
	lc, err := net.ListenUDP(udpNetwork(listen.Addr()), net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return nil, fmt.Errorf("ListenUDP(%v): %w", listen, err)
	}
	growSocketBuffers(lc, sockBuf)
	r := &Relay{
		IdleTimeout: 3 * time.Minute,
		Realtime:    true,
		Coalesce:    100 * time.Microsecond,
		listenAddr:  lc.LocalAddr().(*net.UDPAddr).AddrPort(),
		target:      target,
		lc:          lc,
		ups:         make(map[netip.AddrPort]*upstream),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*Relay, error) {
		lc.Close()
		for _, l := range r.links {
			if l != nil {
				l.closeTimer()
			}
		}
		return nil, err
	}
	if r.rd, err = newBatchConn(lc, readBatch, maxDatagram); err != nil {
		return fail(err)
	}
	r.rd.enableStamps()
	for d, p := range []Params{up, down} {
		if r.links[d], err = newLink(Direction(d), p, seed); err != nil {
			return fail(err)
		}
	}
	return r, nil
}

func udpNetwork(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

// Addr is the address peers send to.
func (r *Relay) Addr() netip.AddrPort { return r.listenAddr }

// Target is the address the relay forwards to.
func (r *Relay) Target() netip.AddrPort { return r.target }

// Close releases a relay that will not be run (Run closes everything when
// it returns); it does nothing once Run has started.
func (r *Relay) Close() error {
	if !r.ran.CompareAndSwap(false, true) {
		return nil
	}
	r.cancel()
	err := r.lc.Close()
	for _, l := range r.links {
		l.close()
		l.closeTimer()
	}
	return err
}

// Run relays until ctx ends, then closes every socket. A Relay runs once.
func (r *Relay) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("Relay.Run: already run")
	}
	downOut, err := newBatchConn(r.lc, sendBatch, 0)
	if err != nil {
		return err
	}
	for _, l := range r.links {
		l.mu.Lock()
		l.coalesce = int64(max(r.Coalesce, 0))
		l.mu.Unlock()
	}
	r.wg.Add(3)
	go func() { defer r.wg.Done(); r.links[Up].run(&upSink{c: &r.links[Up].c}, r.Realtime) }()
	go func() { defer r.wg.Done(); r.links[Down].run(&downSink{b: downOut, c: &r.links[Down].c}, r.Realtime) }()
	errc := make(chan error, 1)
	go func() { defer r.wg.Done(); errc <- r.readClients() }()
	go r.expire(ctx)

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	r.cancel()
	r.lc.Close()
	r.mu.Lock()
	for k, u := range r.ups {
		u.closed.Store(true)
		u.conn.Close()
		delete(r.ups, k)
	}
	r.mu.Unlock()
	for _, l := range r.links {
		l.close()
	}
	r.wg.Wait()
	for _, l := range r.links {
		l.closeTimer()
	}
	return err
}

// readClients reads the peers' datagrams into the Up link.
func (r *Relay) readClients() error {
	in := make([]inPkt, 0, readBatch)
	var cache *upstream
	pace, err := newPacer(r.ctx)
	if err != nil {
		return err
	}
	defer pace.close()
	for errs := 0; ; {
		n, err := r.rd.read()
		if err != nil {
			if isClosed(err) {
				return nil
			}
			// A pending ICMP error leaves the socket usable; an endless
			// stream of errors does not.
			if errs++; errs > 1000 {
				return fmt.Errorf("reading %v: %w", r.listenAddr, err)
			}
			continue
		}
		errs = 0
		realNs, now := clockPair()
		in = in[:0]
		for i := 0; i < n; i++ {
			src := r.rd.source(i)
			if cache == nil || cache.client != src || cache.closed.Load() {
				if cache, err = r.upstreamFor(src); err != nil {
					cache = nil
					r.links[Up].c.sendErrors.Add(1)
					continue
				}
			}
			cache.last.Store(now)
			in = append(in, inPkt{data: r.rd.bufs[i][:r.rd.hdrs[i].n], up: cache, at: r.rd.arrival(i, realNs, now, now)})
		}
		if p := r.links[Up].enqueue(now, in); p > 0 && n < readBatch {
			pace.sleep(now + p)
		}
	}
}

func (r *Relay) upstreamFor(client netip.AddrPort) (*upstream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := r.ups[client]; u != nil {
		return u, nil
	}
	if r.ctx.Err() != nil {
		return nil, net.ErrClosed
	}
	c, err := net.DialUDP(udpNetwork(r.target.Addr()), nil, net.UDPAddrFromAddrPort(r.target))
	if err != nil {
		return nil, fmt.Errorf("DialUDP(%v): %w", r.target, err)
	}
	growSocketBuffers(c, sockBuf)
	rd, err := newBatchConn(c, readBatch, maxDatagram)
	if err != nil {
		c.Close()
		return nil, err
	}
	rd.enableStamps()
	u := &upstream{client: client, conn: c}
	u.last.Store(monoNow())
	r.ups[client] = u
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.readUpstream(u, rd) }()
	return u, nil
}

// readUpstream reads the target's replies for one peer into the Down link.
func (r *Relay) readUpstream(u *upstream, rd *batchConn) {
	in := make([]inPkt, 0, readBatch)
	pace, err := newPacer(r.ctx)
	if err != nil {
		return
	}
	defer pace.close()
	for {
		n, err := rd.read()
		if err != nil {
			if isClosed(err) {
				return
			}
			// ECONNREFUSED: the target is not (yet) listening; a later
			// datagram may well get through.
			continue
		}
		realNs, now := clockPair()
		u.last.Store(now)
		in = in[:0]
		for i := 0; i < n; i++ {
			in = append(in, inPkt{data: rd.bufs[i][:rd.hdrs[i].n], dst: u.client, at: rd.arrival(i, realNs, now, now)})
		}
		if p := r.links[Down].enqueue(now, in); p > 0 && n < readBatch {
			pace.sleep(now + p)
		}
	}
}

// expire closes upstream sockets idle for IdleTimeout.
func (r *Relay) expire(ctx context.Context) {
	idle := r.IdleTimeout
	if idle <= 0 {
		return
	}
	tick := time.NewTicker(max(idle/4, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		now := monoNow()
		r.mu.Lock()
		for k, u := range r.ups {
			if now-u.last.Load() > int64(idle) {
				u.closed.Store(true)
				u.conn.Close()
				delete(r.ups, k)
			}
		}
		r.mu.Unlock()
	}
}

// upSink sends to the target through each datagram's upstream socket.
type upSink struct {
	c   *counters
	cur *upstream
	out *batchConn
	wbs map[*upstream]*batchConn
}

func (s *upSink) send(batch []*pkt) error {
	for i := 0; i < len(batch); {
		u := batch[i].up
		j := i
		for j < len(batch) && batch[j].up == u {
			j++
		}
		if u == nil || u.closed.Load() {
			s.c.sendErrors.Add(uint64(j - i))
			i = j
			continue
		}
		b, err := s.writer(u)
		if err != nil {
			s.c.sendErrors.Add(uint64(j - i))
			i = j
			continue
		}
		for k := i; k < j; k++ {
			b.setMsg(k-i, batch[k].buf, netip.AddrPort{})
		}
		before := b.writeErrs
		if err := b.write(j - i); err != nil {
			// Closed by expiry: the peer went quiet; drop, carry on.
			s.c.sendErrors.Add(uint64(j - i))
		}
		s.c.sendErrors.Add(b.writeErrs - before)
		i = j
	}
	return nil
}

// writer keeps one batchConn per live upstream, dropping expired ones.
func (s *upSink) writer(u *upstream) (*batchConn, error) {
	if s.cur == u {
		return s.out, nil
	}
	if s.wbs == nil {
		s.wbs = make(map[*upstream]*batchConn)
	}
	b := s.wbs[u]
	if b == nil {
		for k := range s.wbs {
			if k.closed.Load() {
				delete(s.wbs, k)
			}
		}
		var err error
		if b, err = newBatchConn(u.conn, sendBatch, 0); err != nil {
			return nil, err
		}
		s.wbs[u] = b
	}
	s.cur, s.out = u, b
	return b, nil
}

// downSink sends to the peers from the listen socket.
type downSink struct {
	b *batchConn
	c *counters
}

func (s *downSink) send(batch []*pkt) error {
	for i, q := range batch {
		s.b.setMsg(i, q.buf, q.dst)
	}
	before := s.b.writeErrs
	err := s.b.write(len(batch))
	s.c.sendErrors.Add(s.b.writeErrs - before)
	return err
}

// Set changes one direction's parameters at once; queued datagrams stay
// and leave at the new rate. Out-of-range values are clamped (see
// Params.Validate).
func (r *Relay) Set(d Direction, p Params) {
	if d.valid() {
		r.links[d].set(p)
	}
}

// Params returns one direction's parameters.
func (r *Relay) Params(d Direction) Params {
	if !d.valid() {
		return Params{}
	}
	return r.links[d].params()
}

// update changes one direction's parameters under its lock, so concurrent
// partial updates (a trace's rate step, a blackhole) do not undo each other.
func (r *Relay) update(d Direction, f func(*Params)) Params {
	l := r.links[d]
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.p
	f(&p)
	l.p = p.clamp()
	l.kick()
	return l.p
}

// Blackhole switches the blackhole on or off in both directions.
func (r *Relay) Blackhole(on bool) {
	for d := range r.links {
		r.update(Direction(d), func(p *Params) { p.Blackhole = on })
	}
}

// FollowTrace sets d's rate to each step's rate at the step's offset from
// now, keeping the other parameters, and returns after the last step or
// when ctx ends. The last rate stays in force.
func (r *Relay) FollowTrace(ctx context.Context, d Direction, tr Trace) {
	if !d.valid() {
		return
	}
	start := time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for _, s := range tr {
		if wait := time.Until(start.Add(s.At)); wait > 0 {
			t.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		rate := s.Rate
		r.update(d, func(p *Params) { p.Rate = rate })
	}
}

// startTrace follows tr on d in the background, replacing any trace
// already running there; a nil trace just stops it.
func (r *Relay) startTrace(d Direction, tr Trace) {
	r.traceMu.Lock()
	defer r.traceMu.Unlock()
	if c := r.traceCancel[d]; c != nil {
		c()
		r.traceCancel[d] = nil
	}
	if tr == nil {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.traceCancel[d] = cancel
	go r.FollowTrace(ctx, d, tr)
}

// Stats counts datagrams per direction (index Up or Down).
type Stats struct {
	// Packets and Bytes were delivered (UDP payload bytes).
	Packets [2]uint64 `json:"packets"`
	Bytes   [2]uint64 `json:"bytes"`
	// Dropped overflowed the buffer; Lost fell to random loss;
	// Blackholed met the blackhole, on arrival or when due.
	Dropped    [2]uint64 `json:"dropped"`
	Lost       [2]uint64 `json:"lost"`
	Blackholed [2]uint64 `json:"blackholed"`
	// SendErrors were refused by the kernel or had no upstream socket.
	SendErrors [2]uint64 `json:"send_errors"`
	// Queued is bytes waiting for serialization now; InFlight datagrams
	// have left the bottleneck and are still propagating.
	Queued   [2]int `json:"queued_bytes"`
	InFlight [2]int `json:"in_flight"`
	// LateMean and LateMax are how long after its due time a datagram
	// was handed to the kernel: the emulator's own timing error.
	LateMean [2]time.Duration `json:"late_mean"`
	LateMax  [2]time.Duration `json:"late_max"`
	// Clients is the number of peers with an upstream socket.
	Clients int `json:"clients"`
	// Realtime: both directions deliver from SCHED_FIFO threads.
	Realtime bool `json:"realtime"`
}

// Stats returns the counters so far.
func (r *Relay) Stats() Stats {
	var s Stats
	for d, l := range r.links {
		s.Packets[d] = l.c.packets.Load()
		s.Bytes[d] = l.c.bytes.Load()
		s.Dropped[d] = l.c.dropped.Load()
		s.Lost[d] = l.c.lost.Load()
		s.Blackholed[d] = l.c.blackholed.Load()
		s.SendErrors[d] = l.c.sendErrors.Load()
		s.Queued[d], s.InFlight[d] = l.queued()
		if s.Packets[d] > 0 {
			s.LateMean[d] = time.Duration(l.c.lateNs.Load() / s.Packets[d])
		}
		s.LateMax[d] = time.Duration(l.c.lateMax.Load())
	}
	r.mu.Lock()
	s.Clients = len(r.ups)
	r.mu.Unlock()
	s.Realtime = r.links[Up].rt.Load() && r.links[Down].rt.Load()
	return s
}
