package supervisor

import (
	"context"
	"fmt"

	"github.com/lifeline-router/lifeline/uplinks/ethernet"
	"github.com/lifeline-router/lifeline/uplinks/wifi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"
)

// linkManager is a DHCP/static Ethernet or a WiFi uplink manager: it owns
// the uplink's address and the default route in the uplink's own table.
type linkManager interface {
	prometheus.Collector
	Run(ctx context.Context) error
	StatusJSON() any
	StatusLines() []string
}

// startLinkManagers runs a manager for every managed uplink. Their events
// are the "address" half of an uplink's health: carrier without a lease
// (or an association) is not a usable uplink.
func (s *Supervisor) startLinkManagers(ctx context.Context, errc chan<- error) error {
	var k ethernet.Kernel
	for _, p := range s.plans {
		if !p.u.Managed() {
			continue
		}
		if k == nil {
			var err error
			if k, err = ethernet.NewKernel(netns.None(), s.log); err != nil {
				return fmt.Errorf("ethernet.NewKernel: %w", err)
			}
		}
		name := p.u.Name
		s.mu.Lock()
		s.addrUp[name] = false
		s.mu.Unlock()
		onEvent := func(ev ethernet.Event) {
			s.mu.Lock()
			s.addrUp[name] = ev.Up
			s.mu.Unlock()
			s.event(ev.At, "link_event", name, ev.Reason)
			s.poke()
		}
		var m linkManager
		var err error
		if p.u.WiFi != nil {
			m, err = wifi.New(wifi.Options{Name: name, Interface: p.u.Device, Table: p.uplinkTable(), StateDir: s.cfg.StateDir,
				Config: *p.u.WiFi, Log: s.log, Kernel: k, OnEvent: onEvent, OnDemote: s.SetDemoted})
		} else {
			m, err = ethernet.New(ethernet.Options{Name: name, Device: p.u.Device, Table: p.uplinkTable(), StateDir: s.cfg.StateDir,
				Config: *p.u.Ethernet, Log: s.log, Kernel: k, OnEvent: onEvent})
		}
		if err != nil {
			return fmt.Errorf("uplink %s: %w", name, err)
		}
		if err := s.Register(m); err != nil {
			return fmt.Errorf("registering uplink %s metrics: %w", name, err)
		}
		s.AddExtra("uplink-"+name, m)
		go func() {
			if err := m.Run(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("uplink %s: %w", name, err)
			}
		}()
	}
	return nil
}
