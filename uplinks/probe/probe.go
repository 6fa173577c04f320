// Package probe measures each tunnel from the inside.
//
// Carrier events only catch a cut next to the router. A fault further out
// (the ISP's aggregation, a blackholing firewall, a dead concentrator port)
// leaves every link up and silently eats packets. The only reliable witness
// is traffic through the tunnel itself: small UDP echoes to the concentrator
// (ours, so no public reflectors are needed) a few milliseconds apart on the
// primary and sparse on metered LTE, plus the tunnel's own receive counter,
// which under load proves liveness far more often than probes can.
//
// Silence is judged against a timeout derived from the measured RTT the way
// TCP derives its RTO (RFC 6298), so a loaded path whose RTT swells is not
// declared dead, while an idle 5 ms path is declared dead within ~15 ms.
package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	magic      = 0x4c4c5052 // "LLPR": a probe
	nudgeMagic = 0x4c4c4e47 // "LLNG": a failover nudge (see Responder.OnNudge)
)

// packet layout: magic(4) seq(8) sentUnixNano(8); a nudge adds the dead
// path's IPv4 tunnel address(4).
const (
	packetLen = 20
	nudgeLen  = 24
)

// Responder echoes probes; the concentrator runs one on every tunnel
// address (it listens on the wildcard address).
type Responder struct {
	conn *net.UDPConn
	// OnNudge, when set, runs before a nudge is answered; dead is the
	// router's tunnel address on the path it reports dead. The
	// concentrator uses it to drop that path's subflows and make its MPTCP
	// stack send a fresh DATA_ACK on a surviving one (see
	// appliance/concentrator), so the router learns what the receiver
	// already holds through a path that still works.
	OnNudge func(dead netip.Addr) error
}

// NewResponder listens on addr (e.g. ":7").
func NewResponder(addr string) (*Responder, error) {
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("ResolveUDPAddr(%q): %w", addr, err)
	}
	c, err := net.ListenUDP("udp4", ua)
	if err != nil {
		return nil, fmt.Errorf("ListenUDP(%v): %w", ua, err)
	}
	return &Responder{conn: c}, nil
}

// Addr is where the responder listens.
func (r *Responder) Addr() net.Addr { return r.conn.LocalAddr() }

// Serve echoes until ctx ends.
func (r *Responder) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		r.conn.Close()
	}()
	buf := make([]byte, 1500)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("probe responder read: %w", err)
		}
		// Only echo our own probes, so the responder can't be used as an
		// amplifier or a reflector for anything else.
		switch {
		case n == packetLen && binary.BigEndian.Uint32(buf) == magic:
		case n == nudgeLen && binary.BigEndian.Uint32(buf) == nudgeMagic:
			if r.OnNudge == nil {
				continue
			}
			dead := netip.AddrFrom4([4]byte(buf[packetLen:nudgeLen]))
			if err := r.OnNudge(dead); err != nil {
				continue // no answer: the router falls back on its timeout
			}
		default:
			continue
		}
		r.conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

// Config of one prober.
type Config struct {
	// Interface is the tunnel device the probes must leave through.
	Interface string
	Source    netip.Addr
	Target    netip.AddrPort
	Interval  time.Duration
	// MinTimeout is the floor of the derived timeout.
	MinTimeout time.Duration
	// Window is how many recent probes the loss figure covers.
	Window int
}

// Snapshot is the prober's view at one instant.
type Snapshot struct {
	Alive     bool          // a reply or tunnel packet arrived within Timeout
	Ever      bool          // any reply ever
	SRTT      time.Duration // smoothed RTT
	RTTVar    time.Duration
	LastRTT   time.Duration
	Timeout   time.Duration // current silence threshold
	Silence   time.Duration // time since the last sign of life
	Loss      float64       // fraction of the last Window probes unanswered
	Sent      uint64
	Received  uint64
	LastAlive time.Time
}

// Prober sends probes through one tunnel and tracks its liveness.
type Prober struct {
	cfg  Config
	conn *net.UDPConn

	mu       sync.Mutex
	est      Estimator
	seq      uint64
	sent     uint64
	recv     uint64
	answered []bool // ring by seq % Window
	sentAt   []time.Time
	lastLife time.Time
	started  time.Time
	lastRTT  time.Duration
	ever     bool
	rxCount  uint64
	rxPath   string

	notify    chan struct{}
	ivChanged chan struct{}

	// hist keeps recent answered probes (send time, RTT) for the SQM
	// controller, which needs delay under load, not only liveness.
	hist    []RTTSample
	histPos int

	nudges map[uint64]chan struct{}

	// gaps are recent pauses between two signs of life on a path that
	// turned out alive: the jitter of the evidence itself (a scheduler
	// stall, a burst queued ahead of the ACKs), which probe RTTs alone
	// don't show.
	gaps    [64]gap
	gapNext int
}

type gap struct {
	at time.Time
	d  time.Duration
}

// maxJitterGap is the longest pause still taken for jitter.
const maxJitterGap = 250 * time.Millisecond

// gapWindow is how long an observed pause keeps raising the timeout.
const gapWindow = 10 * time.Second

// RTTSample is one answered probe.
type RTTSample struct {
	SentAt     time.Time
	ReceivedAt time.Time
	RTT        time.Duration
}

const histLen = 512

// New opens the probe socket bound to the tunnel device, so a probe can
// never take another uplink's route and report a dead tunnel as alive.
func New(cfg Config) (*Prober, error) {
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("probe %s: interval %v must be positive", cfg.Interface, cfg.Interval)
	}
	if cfg.Window <= 0 {
		cfg.Window = 100
	}
	d := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if cfg.Interface != "" {
				serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, cfg.Interface)
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_BINDTODEVICE(%s): %w", cfg.Interface, serr)
		}
		return nil
	}}
	laddr := netip.AddrPortFrom(cfg.Source, 0).String()
	pc, err := d.ListenPacket(context.Background(), "udp4", laddr)
	if err != nil {
		return nil, fmt.Errorf("probe ListenPacket(%s dev %s): %w", laddr, cfg.Interface, err)
	}
	p := &Prober{
		cfg:       cfg,
		conn:      pc.(*net.UDPConn),
		answered:  make([]bool, cfg.Window),
		sentAt:    make([]time.Time, cfg.Window),
		notify:    make(chan struct{}, 1),
		ivChanged: make(chan struct{}, 1),
	}
	if cfg.Interface != "" {
		p.rxPath = "/sys/class/net/" + cfg.Interface + "/statistics/rx_packets"
	}
	return p, nil
}

// Changed is signalled (non-blocking) whenever liveness may have changed.
func (p *Prober) Changed() <-chan struct{} { return p.notify }

func (p *Prober) poke() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// SetInterval changes the probing rate (e.g. when a backup becomes the
// active path and deserves closer watching).
func (p *Prober) SetInterval(d time.Duration) {
	p.mu.Lock()
	changed := p.cfg.Interval != d
	p.cfg.Interval = d
	if changed && p.ever {
		// The silence threshold follows the interval; evidence gathered
		// at the old, sparser rate must not be judged by the new, tighter
		// one, or a backup that just became the path dies on the spot.
		p.lastLife = time.Now()
	}
	p.mu.Unlock()
	if changed {
		select {
		case p.ivChanged <- struct{}{}:
		default:
		}
	}
}

// Run sends and receives until ctx ends.
func (p *Prober) Run(ctx context.Context) error {
	p.mu.Lock()
	p.started = time.Now()
	p.lastLife = p.started
	p.mu.Unlock()
	go func() {
		<-ctx.Done()
		p.conn.Close()
	}()
	errc := make(chan error, 1)
	go func() { errc <- p.receive(ctx) }()
	buf := make([]byte, packetLen)
	for {
		p.mu.Lock()
		iv := p.cfg.Interval
		p.mu.Unlock()
		t := time.NewTimer(iv)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case err := <-errc:
			t.Stop()
			return err
		case <-p.ivChanged:
			// A backup that starts carrying traffic is probed at the
			// new rate at once, not after its old, sparse interval.
			t.Stop()
		case <-t.C:
		}
		now := time.Now()
		p.mu.Lock()
		p.seq++
		seq := p.seq
		i := int(seq % uint64(len(p.answered)))
		p.answered[i] = false
		p.sentAt[i] = now
		p.sent++
		wasAlive := p.aliveLocked(now)
		p.checkRxLocked(now)
		nowAlive := p.aliveLocked(now)
		p.mu.Unlock()
		binary.BigEndian.PutUint32(buf[0:], magic)
		binary.BigEndian.PutUint64(buf[4:], seq)
		binary.BigEndian.PutUint64(buf[12:], uint64(now.UnixNano()))
		// A send error (no route while the uplink is down, ENOKEY…) is
		// just a lost probe: silence will say what it means.
		p.conn.WriteToUDPAddrPort(buf, p.cfg.Target)
		if wasAlive != nowAlive || !nowAlive {
			p.poke()
		}
	}
}

// checkRxLocked treats any packet the tunnel delivered since the last look
// as a sign of life: under load, ACKs arrive far more often than probes.
func (p *Prober) checkRxLocked(now time.Time) {
	if p.rxPath == "" {
		return
	}
	b, err := os.ReadFile(p.rxPath)
	if err != nil {
		return
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return
	}
	if p.rxCount != 0 && n > p.rxCount {
		p.lifeLocked(now)
	}
	p.rxCount = n
}

func (p *Prober) receive(ctx context.Context) error {
	buf := make([]byte, 64)
	for {
		n, _, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// ECONNREFUSED and friends come back from ICMP errors on
			// the tunnel: keep listening.
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
				continue
			}
			return fmt.Errorf("probe %s read: %w", p.cfg.Interface, err)
		}
		if n == nudgeLen && binary.BigEndian.Uint32(buf) == nudgeMagic {
			p.mu.Lock()
			if ch, ok := p.nudges[binary.BigEndian.Uint64(buf[4:])]; ok {
				close(ch)
				delete(p.nudges, binary.BigEndian.Uint64(buf[4:]))
			}
			p.lifeLocked(time.Now())
			p.mu.Unlock()
			continue
		}
		if n != packetLen || binary.BigEndian.Uint32(buf) != magic {
			continue
		}
		now := time.Now()
		seq := binary.BigEndian.Uint64(buf[4:])
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(buf[12:])))
		p.mu.Lock()
		i := int(seq % uint64(len(p.answered)))
		wasAlive := p.aliveLocked(now)
		if seq <= p.seq && p.seq-seq < uint64(len(p.answered)) && !p.answered[i] && p.sentAt[i].Equal(sent) {
			p.answered[i] = true
			p.recv++
			p.ever = true
			rtt := now.Sub(sent)
			p.lastRTT = rtt
			// A probe that waited out an outage in a queue (wireguard-go
			// holds packets while it has no session) measures the
			// outage, not the path: it proves life but is no RTT sample.
			if rtt <= max(maxJitterGap, 4*p.est.SRTT) {
				p.est.Sample(rtt)
				if len(p.hist) < histLen {
					p.hist = append(p.hist, RTTSample{sent, now, rtt})
				} else {
					p.hist[p.histPos] = RTTSample{sent, now, rtt}
					p.histPos = (p.histPos + 1) % histLen
				}
			}
		}
		p.lifeLocked(now)
		p.mu.Unlock()
		if !wasAlive {
			p.poke()
		}
	}
}

func (p *Prober) timeoutLocked() time.Duration {
	t := p.est.Timeout(p.cfg.MinTimeout)
	// RFC 6298 smoothing forgets a spike within a few samples, but a path
	// (or a router CPU) that stalled for 70 ms a second ago can do it
	// again: never judge silence shorter than the worst recent round trip
	// with a quarter on top.
	if m := max(p.recentMaxRTTLocked(), p.recentMaxGapLocked()); m > 0 {
		if w := m + m/4; t < w {
			t = w
		}
	}
	// Never judge on fewer than three probe intervals: one lost probe (or
	// one reply stuck behind a burst) must not look like a dead path.
	if f := 3*p.cfg.Interval + p.cfg.Interval/2; t < f {
		t = f
	}
	return t
}

// lifeLocked records a sign of life at now.
func (p *Prober) lifeLocked(now time.Time) {
	// A pause longer than maxJitterGap was an outage (a cut, a
	// blackhole), not jitter of a live path: it must not stretch the
	// timeout for the next one.
	if d := now.Sub(p.lastLife); d > 2*p.cfg.Interval && d <= maxJitterGap && !p.lastLife.IsZero() && p.ever {
		p.gaps[p.gapNext] = gap{now, d}
		p.gapNext = (p.gapNext + 1) % len(p.gaps)
	}
	p.lastLife = now
}

func (p *Prober) recentMaxGapLocked() time.Duration {
	cut := time.Now().Add(-gapWindow)
	var m time.Duration
	for _, g := range p.gaps {
		if g.at.After(cut) && g.d > m {
			m = g.d
		}
	}
	return m
}

// recentMaxRTTLocked is the largest RTT among probes sent in the last
// recentWindow.
func (p *Prober) recentMaxRTTLocked() time.Duration {
	if len(p.hist) == 0 {
		return 0
	}
	cut := time.Now().Add(-recentWindow)
	var m time.Duration
	n := len(p.hist)
	for i := n - 1; i >= 0; i-- {
		s := p.hist[(p.histPos+i)%n]
		if s.SentAt.Before(cut) {
			break
		}
		if s.RTT > m {
			m = s.RTT
		}
	}
	return m
}

// recentWindow is how long a slow round trip keeps raising the timeout.
const recentWindow = 2 * time.Second

func (p *Prober) aliveLocked(now time.Time) bool {
	return now.Sub(p.lastLife) <= p.timeoutLocked()
}

// Nudge asks the far end, through this tunnel, to run its OnNudge action
// and waits for the answer until timeout. It is sent twice, a millisecond
// apart, because a lost nudge would cost the whole timeout.
func (p *Prober) Nudge(dead netip.Addr, timeout time.Duration) (time.Duration, error) {
	if !dead.Is4() {
		return 0, fmt.Errorf("nudge: dead path address %v is not IPv4", dead)
	}
	start := time.Now()
	p.mu.Lock()
	p.seq++
	seq := p.seq
	if p.nudges == nil {
		p.nudges = map[uint64]chan struct{}{}
	}
	ch := make(chan struct{})
	p.nudges[seq] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.nudges, seq)
		p.mu.Unlock()
	}()
	buf := make([]byte, nudgeLen)
	binary.BigEndian.PutUint32(buf[0:], nudgeMagic)
	binary.BigEndian.PutUint64(buf[4:], seq)
	binary.BigEndian.PutUint64(buf[12:], uint64(start.UnixNano()))
	a := dead.As4()
	copy(buf[packetLen:], a[:])
	if _, err := p.conn.WriteToUDPAddrPort(buf, p.cfg.Target); err != nil {
		return 0, fmt.Errorf("nudge via %s: %w", p.cfg.Interface, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	again := time.NewTimer(time.Millisecond)
	defer again.Stop()
	for {
		select {
		case <-ch:
			return time.Since(start), nil
		case <-again.C:
			p.conn.WriteToUDPAddrPort(buf, p.cfg.Target)
		case <-t.C:
			return time.Since(start), fmt.Errorf("nudge via %s: no answer within %v", p.cfg.Interface, timeout)
		}
	}
}

// Samples returns the answered probes sent after since, oldest first.
func (p *Prober) Samples(since time.Time) []RTTSample {
	return p.samples(func(s RTTSample) bool { return s.SentAt.After(since) })
}

// ReceivedAfter returns the answered probes whose answer arrived after t,
// in arrival order.
func (p *Prober) ReceivedAfter(t time.Time) []RTTSample {
	return p.samples(func(s RTTSample) bool { return s.ReceivedAt.After(t) })
}

func (p *Prober) samples(keep func(RTTSample) bool) []RTTSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []RTTSample
	n := len(p.hist)
	for i := 0; i < n; i++ {
		s := p.hist[(p.histPos+i)%n]
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// OldestPending is the age of the oldest probe still unanswered within the
// recent window (0 when none): a queue that swallows probes shows up here
// before any reply can report it.
func (p *Prober) OldestPending() time.Duration {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest time.Duration
	to := p.timeoutLocked() * 4
	for i := range p.answered {
		if p.sentAt[i].IsZero() || p.answered[i] {
			continue
		}
		if age := now.Sub(p.sentAt[i]); age > oldest && age < to {
			oldest = age
		}
	}
	return oldest
}

// Snapshot returns the current view.
func (p *Prober) Snapshot() Snapshot {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	// Look at the tunnel's receive counter before judging: when this
	// process was not scheduled for a while (a loaded router), the kernel
	// still counted every packet the tunnel delivered, and silence we
	// merely failed to look at is not silence.
	p.checkRxLocked(now)
	s := Snapshot{
		Alive:     p.ever && p.aliveLocked(now),
		Ever:      p.ever,
		SRTT:      p.est.SRTT,
		RTTVar:    p.est.RTTVar,
		LastRTT:   p.lastRTT,
		Timeout:   p.timeoutLocked(),
		Silence:   now.Sub(p.lastLife),
		Sent:      p.sent,
		Received:  p.recv,
		LastAlive: p.lastLife,
	}
	// Loss over the window, ignoring probes still within their timeout.
	var n, lost int
	for i := range p.answered {
		if p.sentAt[i].IsZero() || now.Sub(p.sentAt[i]) < s.Timeout {
			continue
		}
		n++
		if !p.answered[i] {
			lost++
		}
	}
	if n > 0 {
		s.Loss = float64(lost) / float64(n)
	}
	return s
}

// Estimator is RFC 6298's smoothed RTT and variance.
type Estimator struct {
	SRTT   time.Duration
	RTTVar time.Duration
	n      int
}

// Sample feeds one RTT measurement.
func (e *Estimator) Sample(r time.Duration) {
	if e.n == 0 {
		e.SRTT = r
		e.RTTVar = r / 2
	} else {
		d := e.SRTT - r
		if d < 0 {
			d = -d
		}
		e.RTTVar = (3*e.RTTVar + d) / 4
		e.SRTT = (7*e.SRTT + r) / 8
	}
	e.n++
}

// Timeout is SRTT + 4·RTTVAR, at least floor. Before any sample it is a
// conservative second, like TCP's initial RTO.
func (e *Estimator) Timeout(floor time.Duration) time.Duration {
	if e.n == 0 {
		return time.Second
	}
	t := e.SRTT + 4*e.RTTVar
	if t < floor {
		t = floor
	}
	return t
}
