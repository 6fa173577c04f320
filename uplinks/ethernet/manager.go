package ethernet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/dhcp4"
)

// Routing tables the uplink's default route must never go into.
const (
	tableDefault = 253
	tableMain    = 254
	tableLocal   = 255
)

// Options for one uplink's Manager.
type Options struct {
	Name     string // uplink name, for events, metrics and the lease file
	Device   string // the port; with Config.VLAN the uplink runs on Device.VLAN
	Table    int    // the uplink's own routing table (the supervisor uses 100+index)
	StateDir string // the DHCP lease is kept in StateDir/dhcp4-<Name>.json ("" = not kept)
	Config   Config
	Log      *slog.Logger
	Kernel   Kernel // required; NewKernel for the real one

	// OnEvent is called synchronously for every event, before it is
	// queued on Events(); it must return quickly.
	OnEvent func(Event)

	// DHCP tuning; zero values are RFC defaults (tests shorten them).
	DHCPTimeout  time.Duration // first retransmission timeout
	DHCPMinRetry time.Duration // floor between renew/rebind attempts
}

// Event is an uplink state change, or a new/renewed lease while up.
type Event struct {
	Uplink string
	Up     bool   // the uplink can carry traffic (carrier and address)
	Reason string // "carrier lost", "dhcp obtained", "dhcp lease expired", "dhcp nak", "static", ...
	Lease  *dhcp4.Lease
	At     time.Time
}

// Status is the uplink's state for `lifeline status` and metrics.
type Status struct {
	Uplink      string       `json:"uplink"`
	Device      string       `json:"device"`
	Mode        string       `json:"mode"` // "dhcp" or "static"
	Carrier     bool         `json:"carrier"`
	Up          bool         `json:"up"`
	Address     netip.Prefix `json:"address,omitzero"`
	Gateway     netip.Addr   `json:"gateway,omitzero"`
	Table       int          `json:"table"`
	LeaseServer netip.Addr   `json:"lease_server,omitzero"`
	LeaseRenew  time.Time    `json:"lease_renew,omitzero"`
	LeaseExpiry time.Time    `json:"lease_expiry,omitzero"`
	Reason      string       `json:"reason,omitempty"` // of the last change
	Since       time.Time    `json:"since,omitzero"`
	LastError   string       `json:"last_error,omitempty"`
}

// Manager keeps one wired uplink addressed and reports its state.
type Manager struct {
	o      Options
	log    *slog.Logger
	events chan Event

	mu      sync.Mutex
	st      Status
	gen     int     // bumped on carrier loss; DHCP updates of an older generation are stale
	pending []Event // emitted under mu, delivered by flush outside it

	sendMu sync.Mutex // keeps deliveries in emission order
}

// New checks opts; nothing is changed until Run.
func New(o Options) (*Manager, error) {
	if o.Name == "" {
		return nil, errors.New("name: empty")
	}
	if o.Device == "" {
		return nil, fmt.Errorf("uplink %s: device: empty", o.Name)
	}
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("uplink %s: %w", o.Name, err)
	}
	switch {
	case o.Table <= 0 || o.Table >= 1<<31:
		return nil, fmt.Errorf("uplink %s: table: %d not a usable routing table", o.Name, o.Table)
	case o.Table == tableMain || o.Table == tableLocal || o.Table == tableDefault:
		// The whole point of per-uplink tables: the main table's default
		// route must stay the router's own business.
		return nil, fmt.Errorf("uplink %s: table: %d is a kernel table (main/local/default); give the uplink its own", o.Name, o.Table)
	}
	if o.Kernel == nil {
		return nil, fmt.Errorf("uplink %s: no Kernel", o.Name)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	mode := "static"
	if o.Config.DHCP {
		mode = "dhcp"
	}
	m := &Manager{o: o, log: o.Log.With("uplink", o.Name), events: make(chan Event, 64)}
	m.st = Status{Uplink: o.Name, Device: VLANName(o.Device, o.Config.VLAN), Mode: mode, Table: o.Table}
	return m, nil
}

// Events delivers state changes. It never blocks the manager: when the
// reader falls behind, the oldest queued events are dropped (Up in the
// newest one is the current level).
func (m *Manager) Events() <-chan Event { return m.events }

// Status returns a snapshot.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

// LeasePath is where the DHCP lease is persisted ("" = nowhere).
func (m *Manager) LeasePath() string {
	if m.o.StateDir == "" {
		return ""
	}
	return filepath.Join(m.o.StateDir, "dhcp4-"+m.o.Name+".json")
}

// emit records a change; it must be called with m.mu held, and the
// caller calls flush after unlocking.
func (m *Manager) emit(up bool, reason string, l *dhcp4.Lease) {
	now := time.Now()
	if m.st.Up != up {
		m.st.Since = now
	}
	m.st.Up, m.st.Reason = up, reason
	m.pending = append(m.pending, Event{Uplink: m.o.Name, Up: up, Reason: reason, Lease: l, At: now})
	m.log.Info("uplink "+map[bool]string{true: "up", false: "down"}[up], "reason", reason)
}

// flush delivers recorded events outside m.mu, so OnEvent may call
// Status.
func (m *Manager) flush() {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	m.mu.Lock()
	evs := m.pending
	m.pending = nil
	m.mu.Unlock()
	for _, e := range evs {
		if m.o.OnEvent != nil {
			m.o.OnEvent(e)
		}
		for sent := false; !sent; {
			select {
			case m.events <- e:
				sent = true
			default:
				select {
				case <-m.events:
				default:
				}
			}
		}
	}
}

func (m *Manager) setErr(err error) {
	m.log.Warn("uplink", "err", err)
	m.st.LastError = err.Error()
}

// Run brings the uplink up and keeps it so until ctx ends (then nil).
// Only a failure to create the device at all is returned as an error.
func (m *Manager) Run(ctx context.Context) error {
	k := m.o.Kernel
	dev := m.o.Device
	if m.o.Config.VLAN != 0 {
		var err error
		if dev, err = k.EnsureVLAN(m.o.Device, m.o.Config.VLAN); err != nil {
			return fmt.Errorf("uplink %s: %w", m.o.Name, err)
		}
	}
	if err := k.SetUp(dev); err != nil {
		// A WiFi interface may not exist yet; carrier watch reports it.
		m.mu.Lock()
		m.setErr(err)
		m.mu.Unlock()
	}

	carrierCh := make(chan bool, 1)
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		k.WatchCarrier(wctx, dev, func(c bool) {
			// Keep only the newest value: the loop acts on levels.
			for {
				select {
				case carrierCh <- c:
					return
				default:
					select {
					case <-carrierCh:
					default:
					}
				}
			}
		})
	}()
	defer func() { wcancel(); <-wdone }()

	var (
		carrier   bool
		stopDHCP  = func() {}
		dhcpDone  <-chan error
		retryDHCP <-chan time.Time
	)
	defer func() { stopDHCP() }()
	startDHCP := func() {
		m.mu.Lock()
		gen := m.gen
		m.mu.Unlock()
		dctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- m.runDHCP(dctx, dev, gen) }()
		dhcpDone = done
		stopDHCP = func() { cancel(); <-done; stopDHCP = func() {}; dhcpDone = nil }
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-carrierCh:
			m.mu.Lock()
			m.st.Carrier = c
			m.mu.Unlock()
			if c == carrier {
				continue
			}
			carrier = c
			if !c {
				m.mu.Lock()
				m.gen++
				if m.st.Up {
					m.emit(false, "carrier lost", nil)
				}
				m.mu.Unlock()
				m.flush()
				stopDHCP()
				retryDHCP = nil
				continue
			}
			if m.o.Config.DHCP {
				startDHCP()
			} else {
				m.applyStatic(dev)
			}
		case err := <-dhcpDone:
			// The client only ends early when its socket could not be
			// opened; try again shortly while carrier lasts.
			stopDHCP = func() {}
			dhcpDone = nil
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("dhcp client stopped")
			}
			m.mu.Lock()
			m.setErr(err)
			m.mu.Unlock()
			retryDHCP = time.After(2 * time.Second)
		case <-retryDHCP:
			retryDHCP = nil
			if carrier {
				startDHCP()
			}
		}
	}
}

func (m *Manager) applyStatic(dev string) {
	p, _ := m.o.Config.prefix() // validated in New
	defer m.flush()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.o.Kernel.ReplaceAddr(dev, p, 0, 0); err != nil {
		m.setErr(err)
		return
	}
	m.st.Address = p
	if m.o.Config.Gateway != "" {
		gw, _ := m.o.Config.gateway()
		if err := m.o.Kernel.ReplaceDefault(dev, gw, p.Addr(), m.o.Table); err != nil {
			m.setErr(err)
			return
		}
		m.st.Gateway = gw
	}
	m.st.LastError = ""
	m.emit(true, "static", nil)
}

func (m *Manager) runDHCP(ctx context.Context, dev string, gen int) error {
	t, err := m.o.Kernel.DialDHCP(dev, dhcp4.TransportOptions{Hostname: m.o.Config.Hostname, Timeout: m.o.DHCPTimeout})
	if err != nil {
		return err
	}
	defer t.Close()
	var store *dhcp4.Store
	if p := m.LeasePath(); p != "" {
		store = &dhcp4.Store{Path: p}
	}
	c := &dhcp4.Client{
		Transport: t,
		Store:     store,
		Log:       m.log,
		MinRetry:  m.o.DHCPMinRetry,
		Notify:    func(u dhcp4.Update) { m.onLease(dev, gen, u) },
	}
	if err := c.Run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// onLease turns a lease change into kernel state and an event. Loss is
// reported before the address is removed: the failover logic must not
// wait for netlink round trips.
func (m *Manager) onLease(dev string, gen int, u dhcp4.Update) {
	defer m.flush()
	m.mu.Lock()
	defer m.mu.Unlock()
	if gen != m.gen {
		return // carrier went away meanwhile; that was reported already
	}
	k, l := m.o.Kernel, u.Lease
	switch u.Kind {
	case dhcp4.Lost:
		if m.st.Up {
			m.emit(false, "dhcp lease "+u.Reason, l)
		}
		m.st.Address, m.st.Gateway = netip.Prefix{}, netip.Addr{}
		m.st.LeaseServer, m.st.LeaseRenew, m.st.LeaseExpiry = netip.Addr{}, time.Time{}, time.Time{}
		// Deliver first, then clean up.
		m.mu.Unlock()
		m.flush()
		errR := k.DelDefault(dev, m.o.Table)
		errA := k.DelAddr(dev, l.Address)
		m.mu.Lock()
		for _, err := range []error{errR, errA} {
			if err != nil {
				m.setErr(err)
			}
		}
		return
	case dhcp4.Bound, dhcp4.Renewed:
		if m.st.Address.IsValid() && m.st.Address != l.Address {
			if err := k.DelAddr(dev, m.st.Address); err != nil {
				m.setErr(err)
			}
		}
		left := l.Remaining(time.Now())
		if l.Infinite() {
			left = 0
		}
		if err := k.ReplaceAddr(dev, l.Address, left, left); err != nil {
			m.setErr(err)
			return
		}
		m.st.Address = l.Address
		if l.Router.IsValid() {
			if err := k.ReplaceDefault(dev, l.Router, l.Address.Addr(), m.o.Table); err != nil {
				m.setErr(err)
				return
			}
		}
		m.st.Gateway = l.Router
		m.st.LeaseServer, m.st.LeaseRenew, m.st.LeaseExpiry = l.Server, l.RenewAt(), l.Expiry()
		m.st.LastError = ""
		m.emit(true, "dhcp "+u.Reason, l)
	}
}
