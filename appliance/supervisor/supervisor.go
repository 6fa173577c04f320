// Package supervisor is the router side of Lifeline: it turns the one
// declarative config into kernel state (WireGuard per uplink, policy
// routing, MPTCP endpoints) and then keeps that state matched to reality,
// moving traffic off a dead uplink within milliseconds and back once it has
// proven itself again.
//
// Everything it applies is idempotent and keyed by uplink index, so applying
// twice changes nothing and a restarted supervisor adopts what it finds.
// The reactor talks to the kernel over netlink only: forking `ip` costs
// 25–70 ms under load, which is the whole failover budget.
package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/uplinks/failover"
	"github.com/lifeline-router/lifeline/uplinks/mptcp"
	"github.com/lifeline-router/lifeline/uplinks/probe"
	"github.com/lifeline-router/lifeline/uplinks/wg"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options for a supervisor run.
type Options struct {
	Config     *config.Config
	Log        *slog.Logger
	EventsFile string  // JSON lines of state changes ("" = none)
	WGMode     wg.Mode // kernel, userspace or auto
	// Ready is called once the configuration is applied.
	Ready func()
}

// Supervisor owns the router's uplinks.
type Supervisor struct {
	opts   Options
	cfg    *config.Config
	log    *slog.Logger
	nl     *netlink.Handle
	pm     *mptcp.Client
	wgm    *wg.Manager
	plans  []*uplinkPlan
	byName map[string]*uplinkPlan
	svc    netip.Addr

	policy  *failover.Policy
	probers map[string]*probe.Prober
	metrics *metrics

	mu        sync.Mutex
	carrier   map[string]bool
	addrUp    map[string]bool // managed uplinks: lease/association held
	demoted   map[string]bool
	modes     map[string]failover.Mode
	adopted   map[string]bool // endpoint left as found until the first verdict
	preferred string
	ready     bool
	lastErr   error

	extras map[string]Extra

	events *eventLog
	wake   chan struct{}

	// Loop-owned: the fail-back hand-over waiting for the primary's
	// subflow (flush.go).
	runCtx    context.Context
	flush     *pendingFlush
	flushDone chan flushResult
}

// New validates and resolves everything; nothing is changed yet.
func New(opts Options) (*Supervisor, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink.NewHandle: %w", err)
	}
	plans, err := plan(opts.Config, nl)
	if err != nil {
		nl.Close()
		return nil, err
	}
	s := &Supervisor{
		opts:    opts,
		cfg:     opts.Config,
		log:     opts.Log,
		nl:      nl,
		plans:   plans,
		byName:  map[string]*uplinkPlan{},
		svc:     netip.MustParseAddr(opts.Config.Concentrator.ServiceAddress),
		policy:  failover.New(opts.Config.Failover.HoldDown.D()),
		probers: map[string]*probe.Prober{},
		carrier: map[string]bool{},
		addrUp:  map[string]bool{},
		demoted: map[string]bool{},
		modes:   map[string]failover.Mode{},
		adopted: map[string]bool{},
		wake:    make(chan struct{}, 1),

		runCtx:    context.Background(),
		flushDone: make(chan flushResult, 1),
	}
	for _, p := range plans {
		s.byName[p.u.Name] = p
	}
	s.events, err = openEventLog(opts.EventsFile)
	if err != nil {
		nl.Close()
		return nil, err
	}
	s.metrics = newMetrics(s)
	return s, nil
}

// Apply brings the kernel to the configured state. Safe to call again.
func (s *Supervisor) Apply() error {
	if err := writeSysctls(routerSysctls); err != nil {
		return err
	}
	if err := writeSysctls(s.cfg.BufferSysctls()); err != nil {
		return err
	}
	for _, p := range s.plans {
		if err := writeSysctls(uplinkSysctls(p.u.Device)); err != nil {
			return err
		}
	}
	if s.pm == nil {
		pm, err := mptcp.Dial()
		if err != nil {
			return fmt.Errorf("mptcp.Dial: %w", err)
		}
		s.pm = pm
	}
	lim := mptcp.Limits{Subflows: s.cfg.MPTCP.Subflows, AddAddrAccepted: s.cfg.MPTCP.AddAddrAccepted}
	if err := s.pm.EnsureLimits(lim); err != nil {
		return fmt.Errorf("mptcp EnsureLimits(%+v): %w", lim, err)
	}
	if s.wgm == nil {
		s.wgm = wg.NewManager(s.log, s.opts.WGMode)
	}
	for _, p := range s.plans {
		if err := applyUplink(s.log, s.nl, s.wgm, p); err != nil {
			return fmt.Errorf("uplink %s: %w", p.u.Name, err)
		}
	}
	var devs []string
	for _, p := range s.plans {
		devs = append(devs, p.u.Device)
		if p.u.Ethernet != nil && p.u.Ethernet.VLAN != 0 {
			devs = append(devs, fmt.Sprintf("%s.%d", p.u.Device, p.u.Ethernet.VLAN))
		}
	}
	if err := applyFirewall(devs); err != nil {
		return err
	}
	// Endpoints not belonging to any tunnel are someone else's leftovers
	// (or ours from an older config): the supervisor owns the path manager.
	eps, err := s.pm.Endpoints()
	if err != nil {
		return fmt.Errorf("mptcp Endpoints: %w", err)
	}
	ours := map[netip.Addr]bool{}
	for _, p := range s.plans {
		ours[p.tunnel.Addr()] = true
	}
	for _, e := range eps {
		if !ours[e.Addr] {
			if err := s.pm.DelEndpoint(e.ID); err != nil {
				return fmt.Errorf("mptcp DelEndpoint(%d %v): %w", e.ID, e.Addr, err)
			}
			continue
		}
		// Adopt: keep the endpoint and its flags until the first health
		// verdict, but point it at the tunnel as it is now (a userspace
		// tunnel is recreated with a new ifindex when we restart).
		for _, p := range s.plans {
			if p.tunnel.Addr() != e.Addr {
				continue
			}
			tl, err := s.nl.LinkByName(p.u.WireGuard.Interface)
			if err != nil {
				return fmt.Errorf("LinkByName(%s): %w", p.u.WireGuard.Interface, err)
			}
			if e.IfIndex != tl.Attrs().Index {
				ne := endpointFor(p, tl, e.Flags&mptcp.FlagBackup != 0)
				ne.ID = e.ID // keep the id: subflows and peers know it
				if _, err := s.pm.EnsureEndpoint(ne); err != nil {
					return fmt.Errorf("mptcp EnsureEndpoint(%v): %w", ne, err)
				}
			}
			s.mu.Lock()
			s.adopted[p.u.Name] = true
			s.mu.Unlock()
		}
	}
	// New connections need a route to the service address from the start;
	// keep the one we find if it uses one of our tunnels, else take the
	// most preferred uplink until the health checks decide.
	if err := s.adoptServiceRoute(); err != nil {
		return err
	}
	return nil
}

// Run applies the config and then supervises until ctx ends.
func (s *Supervisor) Run(ctx context.Context) error {
	defer s.close()
	if err := s.Apply(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	errc := make(chan error, 8)

	// Carrier: subscribe before the first read, so no event falls between.
	// The library ends a subscription on any receive error and closes the
	// channel it was given; each subscription gets its own channel, a
	// closed one means "subscribe again", and every tick re-reads the
	// uplinks' flags as a backstop.
	subscribe := func() (chan netlink.LinkUpdate, chan struct{}, error) {
		ch := make(chan netlink.LinkUpdate, 256)
		done := make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			ReceiveBufferSize: 1 << 20,
			ErrorCallback: func(err error) {
				s.log.Debug("link subscription ended, resubscribing", "err", err)
			},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("LinkSubscribe: %w", err)
		}
		return ch, done, nil
	}
	updates, subDone, err := subscribe()
	if err != nil {
		return err
	}
	defer func() { close(subDone) }()
	s.refreshCarrier()

	for _, p := range s.plans {
		iv := s.cfg.Failover.ProbeInterval.D()
		if p.u.Role == config.RoleBackup {
			iv = s.cfg.Failover.BackupProbeInterval.D()
		}
		pr, err := probe.New(probe.Config{
			Interface:  p.u.WireGuard.Interface,
			Source:     p.tunnel.Addr(),
			Target:     netip.AddrPortFrom(p.peer, uint16(s.cfg.Concentrator.ProbePort)),
			Interval:   iv,
			MinTimeout: s.cfg.Failover.MinTimeout.D(),
		})
		if err != nil {
			return err
		}
		s.probers[p.u.Name] = pr
		go func() {
			if err := pr.Run(ctx); err != nil {
				errc <- err
			}
		}()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-pr.Changed():
					s.poke()
				}
			}
		}()
	}

	if err := s.startLinkManagers(ctx, errc); err != nil {
		return err
	}
	if err := s.startSQM(ctx); err != nil {
		return err
	}

	srv, err := s.serveHTTP(ctx)
	if err != nil {
		return err
	}
	defer srv.Close()

	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	s.log.Info("lifeline: ready", "uplinks", len(s.plans), "metrics", s.cfg.MetricsListen)
	if s.opts.Ready != nil {
		s.opts.Ready()
	}

	// Hold-downs end with time, not with an event: re-evaluate regularly.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case u, ok := <-updates:
			if !ok {
				close(subDone)
				if updates, subDone, err = subscribe(); err != nil {
					return err
				}
				s.refreshCarrier()
				s.reconcile()
				continue
			}
			for _, p := range s.plans {
				if p.link.Attrs().Index == int(u.Index) {
					s.setCarrier(p, hasCarrier(u.Link))
				}
			}
			s.reconcile()
		case <-s.wake:
			s.reconcile()
		case r := <-s.flushDone:
			s.finishFlush(r)
		case <-tick.C:
			s.refreshCarrier()
			s.reconcile()
		}
	}
}

func (s *Supervisor) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func hasCarrier(l netlink.Link) bool {
	a := l.Attrs()
	return a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0
}

// addrOK: an unmanaged uplink is addressed by whoever set it up; a managed
// one only while its manager holds a lease or an association. Call with
// s.mu held.
func (s *Supervisor) addrOK(name string) bool {
	up, managed := s.addrUp[name]
	return !managed || up
}

func (s *Supervisor) refreshCarrier() {
	for _, p := range s.plans {
		if l, err := s.nl.LinkByName(p.u.Device); err == nil {
			s.setCarrier(p, hasCarrier(l))
		} else {
			s.setCarrier(p, false)
		}
	}
}

// setCarrier records an uplink's carrier; a carrier that comes back gets
// its neighbour kick, whichever path saw it first. Which one does is a
// race: the 50 ms refresh can read the new carrier before the link event
// is handled (likely because the kernel sets IFF_LOWER_UP at once but
// sends RTM_NEWLINK from its rate-limited linkwatch work; not traced).
// Kicking on link events only left 1 in about 20 flap restores without a
// kick: the fiber then came back when its ARP timer fired, ~0.5 s late
// (fail-back 1.18-1.28 s).
// The first reading at start-up is not a return: the state before it is
// unknown, and an uplink being set up must not have its first
// resolution deleted.
func (s *Supervisor) setCarrier(p *uplinkPlan, up bool) {
	name := p.u.Name
	s.mu.Lock()
	was, known := s.carrier[name]
	if known && was == up {
		s.mu.Unlock()
		return
	}
	s.carrier[name] = up
	s.mu.Unlock()
	s.log.Info("carrier", "uplink", name, "up", up)
	if up && known {
		s.kickNeighbors(p)
	}
}

// kickNeighbors lets a returning uplink resolve its gateway at once
// instead of after the ARP timer it ran while the link was dead (see
// flushUnresolved).
func (s *Supervisor) kickNeighbors(p *uplinkPlan) {
	n, err := flushUnresolved(s.nl, p.link.Attrs().Index)
	if err != nil {
		s.log.Warn("neighbour kick", "uplink", p.u.Name, "err", err)
		return
	}
	// An event even when nothing was flushed: a slow fail-back is told
	// apart from a missed carrier event by whether this is in the log.
	s.event(time.Now(), "neighbour_kick", p.u.Name, fmt.Sprintf("flushed %d unresolved", n))
	if n > 0 {
		s.log.Info("neighbour kick", "uplink", p.u.Name, "flushed", n)
	}
}

// SetDemoted is the hook for signal-based policies (modem RSSI, WiFi).
func (s *Supervisor) SetDemoted(name string, demoted bool) {
	s.mu.Lock()
	s.demoted[name] = demoted
	s.mu.Unlock()
	s.poke()
}

// reconcile feeds the policy and carries out its decision.
func (s *Supervisor) reconcile() {
	now := time.Now()
	var obs []failover.Observation
	s.mu.Lock()
	for _, p := range s.plans {
		snap := s.probers[p.u.Name].Snapshot()
		// Until a tunnel has answered once or its first timeout has
		// passed, its health is unknown: an adopted endpoint stays as it
		// was, so a supervisor restart doesn't tear down live subflows.
		if !snap.Ever && snap.Silence < snap.Timeout && s.carrier[p.u.Name] {
			continue
		}
		role := failover.Primary
		if p.u.Role == config.RoleBackup {
			role = failover.Backup
		}
		obs = append(obs, failover.Observation{
			Name: p.u.Name, Role: role, Priority: p.u.Priority,
			Carrier: s.carrier[p.u.Name] && s.addrOK(p.u.Name), Alive: snap.Alive, Demoted: s.demoted[p.u.Name],
		})
	}
	s.mu.Unlock()
	if len(obs) == 0 {
		return
	}
	d := s.policy.Update(now, obs)
	for i, t := range d.Transitions {
		if t.Reason == "probe timeout" {
			// Say what the prober saw: a false "down" is diagnosed
			// from these numbers.
			snap := s.probers[t.Uplink].Snapshot()
			t.Reason = fmt.Sprintf("probe timeout (silence %v > timeout %v; srtt %v rttvar %v; sent %d answered %d)",
				snap.Silence.Round(time.Microsecond), snap.Timeout.Round(time.Microsecond), snap.SRTT.Round(time.Microsecond),
				snap.RTTVar.Round(time.Microsecond), snap.Sent, snap.Received)
			d.Transitions[i] = t
		}
		ev := "uplink_" + string(t.To)
		switch {
		case t.From == t.To:
			ev = "uplink_policy"
		case t.To == failover.StateDown:
			s.metrics.failovers.WithLabelValues(t.Uplink).Inc()
		}
		s.event(now, ev, t.Uplink, t.Reason)
		s.log.Info("uplink state", "uplink", t.Uplink, "from", t.From, "to", t.To, "reason", t.Reason)
	}
	// With nothing usable, removing endpoints helps nobody: the subflows'
	// own retransmissions are what notices a path coming back. Keep the
	// last set until something is usable again.
	usable := false
	for _, m := range d.Modes {
		if m != failover.Unused {
			usable = true
		}
	}
	if !usable {
		return
	}
	s.mu.Lock()
	prev := maps.Clone(s.modes)
	s.mu.Unlock()
	// Removals first: every millisecond a dead path keeps its endpoint is
	// a millisecond of data queued into a black hole.
	for _, pass := range []func(failover.Mode) bool{
		func(m failover.Mode) bool { return m == failover.Unused },
		func(m failover.Mode) bool { return m != failover.Unused },
	} {
		for _, o := range obs {
			want := d.Modes[o.Name]
			if !pass(want) {
				continue
			}
			if err := s.setMode(o.Name, want); err != nil {
				s.fail(err)
			}
		}
	}
	if d.Preferred != "" {
		if err := s.setPreferred(d.Preferred); err != nil {
			s.fail(err)
		}
	}
	if active, backups := failingBack(prev, d.Modes); active != "" && !s.cfg.Failover.KeepBackupBacklog {
		s.startFlush(active, backups)
	}
	s.dropStaleFlush()
	s.tuneProbes(d)
}

// failingBack reports the uplink that has just become active after none
// was (so the backups carried the traffic), and the backups that did.
func failingBack(prev, now map[string]failover.Mode) (active string, backups []string) {
	for _, m := range prev {
		if m == failover.Active {
			return "", nil
		}
	}
	for name, m := range now {
		if m == failover.Active && prev[name] != failover.Active {
			active = name
		}
	}
	if active == "" {
		return "", nil
	}
	for name, m := range now {
		if m == failover.Standby && prev[name] == failover.Standby {
			backups = append(backups, name)
		}
	}
	return active, backups
}

// removeEndpoints deletes the MPTCP endpoints on p's tunnel address (the
// kernel closes their subflows) and returns what it deleted.
func (s *Supervisor) removeEndpoints(p *uplinkPlan) ([]removedEndpoint, error) {
	start := time.Now()
	eps, err := s.pm.Endpoints()
	if err != nil {
		return nil, fmt.Errorf("mptcp Endpoints: %w", err)
	}
	dump := time.Since(start)
	var gone []removedEndpoint
	for _, e := range eps {
		if e.Addr != p.tunnel.Addr() {
			continue
		}
		t := time.Now()
		if err := s.pm.DelEndpoint(e.ID); err != nil {
			return gone, fmt.Errorf("mptcp DelEndpoint(%d %v): %w", e.ID, e.Addr, err)
		}
		gone = append(gone, removedEndpoint{Endpoint: e, dump: dump, del: time.Since(t)})
	}
	return gone, nil
}

// removedEndpoint says how long finding and deleting it took: the delete
// closes the path's subflows and starts the re-injection inside the
// kernel, so on a slow CPU it is most of the time from detection to the
// backup carrying data.
type removedEndpoint struct {
	mptcp.Endpoint
	dump, del time.Duration
}

// ensureEndpoint makes p's tunnel address an MPTCP subflow endpoint,
// backup or not.
func (s *Supervisor) ensureEndpoint(p *uplinkPlan, backup bool) (mptcp.Endpoint, error) {
	tl, err := s.nl.LinkByName(p.u.WireGuard.Interface)
	if err != nil {
		return mptcp.Endpoint{}, fmt.Errorf("LinkByName(%s): %w", p.u.WireGuard.Interface, err)
	}
	ep := endpointFor(p, tl, backup)
	got, err := s.pm.EnsureEndpoint(ep)
	if err != nil {
		return got, fmt.Errorf("mptcp EnsureEndpoint(%v): %w", ep, err)
	}
	return got, nil
}

// tuneProbes watches a backup closely only while it carries the traffic:
// sparse probes respect LTE data caps, but the autorate controller and the
// fail-back logic need samples every few tens of ms on the path in use.
func (s *Supervisor) tuneProbes(d failover.Decision) {
	anyActive := false
	for _, m := range d.Modes {
		if m == failover.Active {
			anyActive = true
		}
	}
	for _, p := range s.plans {
		if p.u.Role != config.RoleBackup {
			continue
		}
		iv := s.cfg.Failover.BackupProbeInterval.D()
		if !anyActive && d.Modes[p.u.Name] == failover.Standby {
			iv = min(iv, 20*time.Millisecond)
		}
		s.probers[p.u.Name].SetInterval(iv)
	}
}

func (s *Supervisor) fail(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	s.log.Error("reconcile", "err", err)
}

func (s *Supervisor) setMode(name string, want failover.Mode) error {
	s.mu.Lock()
	have, known := s.modes[name]
	adopted := s.adopted[name]
	delete(s.adopted, name)
	s.mu.Unlock()
	if known && have == want {
		return nil
	}
	p := s.byName[name]
	now := time.Now()
	switch want {
	case failover.Unused:
		if known && have == failover.Active && s.nudgeWanted() {
			s.nudge(name)
		}
		gone, err := s.removeEndpoints(p)
		for _, e := range gone {
			s.event(time.Now(), "endpoint_removed", name, fmt.Sprintf("id %d %v (dump %v, delete %v)", e.ID, e.Addr,
				e.dump.Round(time.Microsecond), e.del.Round(time.Microsecond)))
		}
		if err != nil {
			return err
		}
	default:
		got, err := s.ensureEndpoint(p, want == failover.Standby)
		if err != nil {
			return err
		}
		if (known && have != want) || (!known && !adopted) {
			s.event(time.Now(), "endpoint_added", name, fmt.Sprintf("id %d %v %v", got.ID, got.Addr, got.Flags))
		}
	}
	s.mu.Lock()
	s.modes[name] = want
	s.mu.Unlock()
	s.log.Debug("endpoint", "uplink", name, "mode", want, "took", time.Since(now))
	return nil
}

// nudge asks the concentrator, through another live tunnel, for a fresh
// DATA_ACK on every subflow, and waits for it (about one round trip of
// that tunnel). The dead path's ACKs died with it, so without this the
// sender's acknowledged point is stale and the kernel re-injects, on the
// backup, everything the receiver already holds before the real hole.
func (s *Supervisor) nudge(dead string) {
	var via *probe.Prober
	var viaName string
	for _, p := range s.plans {
		if p.u.Name == dead {
			continue
		}
		pr := s.probers[p.u.Name]
		s.mu.Lock()
		m := s.modes[p.u.Name]
		s.mu.Unlock()
		if m == failover.Unused || pr == nil || !pr.Snapshot().Ever {
			continue
		}
		via, viaName = pr, p.u.Name
		break
	}
	if via == nil {
		return
	}
	snap := via.Snapshot()
	timeout := 2*snap.SRTT + 20*time.Millisecond
	timeout = max(30*time.Millisecond, min(timeout, 250*time.Millisecond))
	s.event(time.Now(), "nudge_sent", dead, "via "+viaName)
	took, err := via.Nudge(s.byName[dead].tunnel.Addr(), timeout)
	if err != nil {
		s.event(time.Now(), "nudge_timeout", dead, err.Error())
		return
	}
	s.event(time.Now(), "nudge_answered", dead, fmt.Sprintf("via %s in %v", viaName, took.Round(time.Microsecond)))
}

func (s *Supervisor) setPreferred(name string) error {
	s.mu.Lock()
	cur := s.preferred
	s.mu.Unlock()
	if cur == name {
		return nil
	}
	p := s.byName[name]
	tl, err := s.nl.LinkByName(p.u.WireGuard.Interface)
	if err != nil {
		return fmt.Errorf("LinkByName(%s): %w", p.u.WireGuard.Interface, err)
	}
	r := serviceRoute(p, s.svc, tl)
	if err := s.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("RouteReplace(%v): %w", r, err)
	}
	s.mu.Lock()
	s.preferred = name
	s.mu.Unlock()
	s.event(time.Now(), "route_switched", name, "service "+s.svc.String())
	return nil
}

func (s *Supervisor) adoptServiceRoute() error {
	routes, err := s.nl.RouteGet(s.svc.AsSlice())
	if err == nil {
		for _, r := range routes {
			for _, p := range s.plans {
				tl, err := s.nl.LinkByName(p.u.WireGuard.Interface)
				if err == nil && r.LinkIndex == tl.Attrs().Index {
					// Re-assert it (attributes such as rto_min may be ours to fix).
					s.mu.Lock()
					s.preferred = ""
					s.mu.Unlock()
					return s.setPreferred(p.u.Name)
				}
			}
		}
	}
	return s.setPreferred(s.cfg.Ordered()[0].Name)
}

func (s *Supervisor) event(t time.Time, ev, uplink, reason string) {
	s.events.write(t, ev, uplink, reason)
}

func (s *Supervisor) close() {
	if s.wgm != nil {
		s.wgm.Close()
	}
	if s.pm != nil {
		s.pm.Close()
	}
	s.nl.Close()
	s.events.close()
}

// serveHTTP serves /metrics, /healthz and /status on the configured
// address, which defaults to loopback: these are never exposed on an uplink.
func (s *Supervisor) serveHTTP(ctx context.Context) (*http.Server, error) {
	ln, err := net.Listen("tcp", s.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("Listen(%s): %w", s.cfg.MetricsListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metrics.handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		st := s.Status()
		if !st.Ready || st.Error != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(map[string]any{"ready": st.Ready, "error": st.Error, "version": Version})
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http", "err", err)
		}
	}()
	return srv, nil
}

// Version is set at build time (-ldflags -X) for OTA checks.
var Version = "dev"

// eventLog appends JSON lines; the lab's breakdown reads them.
type eventLog struct {
	mu sync.Mutex
	f  *os.File
}

func openEventLog(path string) (*eventLog, error) {
	if path == "" {
		return &eventLog{}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0644)
	if err != nil {
		return nil, fmt.Errorf("events file: %w", err)
	}
	return &eventLog{f: f}, nil
}

func (e *eventLog) write(t time.Time, ev, uplink, reason string) {
	if e.f == nil {
		return
	}
	b, _ := json.Marshal(map[string]string{"time": t.Format(time.RFC3339Nano), "event": ev, "uplink": uplink, "reason": reason})
	e.mu.Lock()
	e.f.Write(append(b, '\n'))
	e.mu.Unlock()
}

func (e *eventLog) close() {
	if e.f != nil {
		e.f.Close()
	}
}

// reinjectLimitSysctl is our board kernel's switch for re-injecting at the
// surviving subflow's pace (board/amd64/patches); other kernels lack it.
var reinjectLimitSysctl = "/proc/sys/net/mptcp/reinject_limit"

// nudgeWanted says whether to nudge before removing a dead primary's
// endpoint. It reads the kernel's switch each time: it is per namespace
// and an operator (or the lab) may flip it at run time.
func (s *Supervisor) nudgeWanted() bool {
	switch s.cfg.Failover.Nudge {
	case config.NudgeOn:
		return true
	case config.NudgeOff:
		return false
	}
	b, err := os.ReadFile(reinjectLimitSysctl)
	if err != nil {
		return true
	}
	// 1 re-injects at the backup's pace, 2 to 4 also ask the receiver
	// where its hole starts first (4 sends the likely hole alongside):
	// either way the kernel finds the hole.
	switch strings.TrimSpace(string(b)) {
	case "1", "2", "3", "4":
		return false
	}
	return true
}
