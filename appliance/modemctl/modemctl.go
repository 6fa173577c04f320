// Package modemctl connects the modem driver to the supervisor: it runs the
// modem Manager (bring-up, watchdog, reconnects), exports its state and
// signal as metrics, and turns a weak signal into a demotion of the LTE
// uplink.
//
// The demotion rule is the seed's exercise ("demote LTE when RSSI < −100
// dBm"), made safe for a real radio: a reading must stay below the
// threshold for a hold time before LTE is demoted, and must come back above
// threshold + hysteresis for the same hold time before it is restored, so a
// signal hovering at −100 dBm cannot make the uplink flap.
package modemctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/modem"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
)

// Demoter is the hysteresis rule, pure logic.
type Demoter struct {
	RSSI, RSRP float64 // demote below these (dBm)
	Hysteresis float64 // restore above threshold + this (dB)
	Hold       time.Duration

	demoted     bool
	weakSince   time.Time
	strongSince time.Time
}

// Update feeds one reading; nil values are unknown. It returns whether the
// uplink is demoted now.
func (d *Demoter) Update(now time.Time, rssi, rsrp *float64) bool {
	if rssi == nil && rsrp == nil {
		// No reading says nothing: keep the verdict and the clocks.
		return d.demoted
	}
	weak := (rssi != nil && *rssi < d.RSSI) || (rsrp != nil && *rsrp < d.RSRP)
	strong := (rssi == nil || *rssi >= d.RSSI+d.Hysteresis) && (rsrp == nil || *rsrp >= d.RSRP+d.Hysteresis)
	if weak {
		if d.weakSince.IsZero() {
			d.weakSince = now
		}
	} else {
		d.weakSince = time.Time{}
	}
	if strong {
		if d.strongSince.IsZero() {
			d.strongSince = now
		}
	} else {
		d.strongSince = time.Time{}
	}
	switch {
	case !d.demoted && weak && now.Sub(d.weakSince) >= d.Hold:
		d.demoted = true
	case d.demoted && strong && now.Sub(d.strongSince) >= d.Hold:
		d.demoted = false
	}
	return d.demoted
}

// Demoted reports the current verdict.
func (d *Demoter) Demoted() bool { return d.demoted }

// NetlinkLink reflects the data call on the uplink device: up, with the
// address the modem reports (a /32 for QMI/MBIM-style raw-IP links).
type NetlinkLink struct {
	Handle *netlink.Handle
	Device string
	Log    *slog.Logger
}

// Up sets the device up and puts the modem's address on it.
func (l NetlinkLink) Up(ctx context.Context, p netip.Prefix) error {
	link, err := l.Handle.LinkByName(l.Device)
	if err != nil {
		return fmt.Errorf("LinkByName(%s): %w", l.Device, err)
	}
	if err := l.Handle.LinkSetUp(link); err != nil {
		return fmt.Errorf("LinkSetUp(%s): %w", l.Device, err)
	}
	if !p.IsValid() {
		// The modem serves DHCP on this link (ECM/RNDIS/NCM modes): the
		// uplink's DHCP client takes it from here.
		l.Log.Info("modem data call up; address by DHCP", "device", l.Device)
		return nil
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := l.Handle.AddrReplace(link, a); err != nil {
		return fmt.Errorf("AddrReplace(%s, %v): %w", l.Device, p, err)
	}
	return nil
}

// Down leaves the device up (the driver owns it) but without the call's
// address, so nothing is routed into a dead call.
func (l NetlinkLink) Down(ctx context.Context) error {
	link, err := l.Handle.LinkByName(l.Device)
	if err != nil {
		return fmt.Errorf("LinkByName(%s): %w", l.Device, err)
	}
	addrs, err := l.Handle.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("AddrList(%s): %w", l.Device, err)
	}
	for _, a := range addrs {
		if ones, _ := a.Mask.Size(); ones == 32 {
			if err := l.Handle.AddrDel(link, &a); err != nil {
				return fmt.Errorf("AddrDel(%s, %v): %w", l.Device, a.IPNet, err)
			}
		}
	}
	return nil
}

// Service runs the modem for one uplink.
type Service struct {
	cfg     config.Modem
	mgr     *modem.Manager
	dem     *Demoter
	demote  func(uplink string, demoted bool)
	log     *slog.Logger
	mu      sync.Mutex
	demoted bool
}

// New prepares a service. link may be nil for "none".
func New(cfg config.Modem, link modem.Link, demote func(string, bool), log *slog.Logger) *Service {
	if link == nil {
		link = modem.NopLink{}
	}
	if log == nil {
		log = slog.Default()
	}
	mgr := modem.NewManager(modem.Config{
		Port:         cfg.Port,
		PIN:          cfg.PIN,
		Data:         modem.DataConfig{APN: cfg.APN, User: cfg.User, Password: cfg.Password},
		Link:         link,
		PollInterval: cfg.PollInterval.D(),
		Logf:         func(f string, a ...any) { log.Info("modem: " + fmt.Sprintf(f, a...)) },
	})
	return &Service{
		cfg: cfg, mgr: mgr, demote: demote, log: log,
		dem: &Demoter{RSSI: cfg.DemoteRSSI, RSRP: cfg.DemoteRSRP, Hysteresis: cfg.Hysteresis, Hold: cfg.DemoteHold.D()},
	}
}

// Run drives the modem until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.mgr.Run(ctx) }()
	// Readings change at the manager's poll rate; looking four times as
	// often keeps the hold time accurate without extra AT traffic.
	iv := s.cfg.PollInterval.D() / 4
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case err := <-errc:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case now := <-t.C:
			if s.cfg.DemoteDisabled {
				continue
			}
			st := s.mgr.Status()
			d := s.dem.Update(now, st.RSSI, st.RSRP)
			s.mu.Lock()
			changed := d != s.demoted
			s.demoted = d
			s.mu.Unlock()
			if changed {
				s.log.Info("modem signal policy", "uplink", s.cfg.Uplink, "demoted", d, "rssi_dbm", fmtp(st.RSSI), "rsrp_dbm", fmtp(st.RSRP))
				if s.demote != nil {
					s.demote(s.cfg.Uplink, d)
				}
			}
		}
	}
}

func fmtp(v *float64) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprintf("%.1f", *v)
}

// Status is the modem's state plus the policy's verdict.
type Status struct {
	modem.Status
	Demoted bool `json:"demoted"`
}

// Status returns the current view.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Status: s.mgr.Status(), Demoted: s.demoted}
}

var (
	descRSSI   = prometheus.NewDesc("modem_rssi_dbm", "Serving cell RSSI.", nil, nil)
	descRSRP   = prometheus.NewDesc("modem_rsrp_dbm", "Serving cell RSRP (LTE anchor for NSA).", nil, nil)
	descRSRQ   = prometheus.NewDesc("modem_rsrq_db", "Serving cell RSRQ.", nil, nil)
	descSINR   = prometheus.NewDesc("modem_sinr_db", "Serving cell SINR.", nil, nil)
	descNRRSRP = prometheus.NewDesc("modem_nr_rsrp_dbm", "5G NR leg RSRP.", nil, nil)
	descNRSINR = prometheus.NewDesc("modem_nr_sinr_db", "5G NR leg SINR.", nil, nil)
	descReg    = prometheus.NewDesc("modem_registered", "1 when registered (home or roaming).", nil, nil)
	descData   = prometheus.NewDesc("modem_data_connected", "1 when the data call is up.", nil, nil)
	descRecon  = prometheus.NewDesc("modem_reconnects_total", "Data calls re-established after a loss.", nil, nil)
	descDem    = prometheus.NewDesc("modem_demoted", "1 while the signal policy demotes the modem's uplink.", nil, nil)
)

// Describe implements prometheus.Collector.
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRSSI, descRSRP, descRSRQ, descSINR, descNRRSRP, descNRSINR, descReg, descData, descRecon, descDem} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Unknown readings are left out,
// never reported as 0.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	st := s.Status()
	opt := func(d *prometheus.Desc, v *float64) {
		if v != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, *v)
		}
	}
	opt(descRSSI, st.RSSI)
	opt(descRSRP, st.RSRP)
	opt(descRSRQ, st.RSRQ)
	opt(descSINR, st.SINR)
	opt(descNRRSRP, st.NRRSRP)
	opt(descNRSINR, st.NRSINR)
	reg := st.Registration == "home" || st.Registration == "roaming"
	ch <- prometheus.MustNewConstMetric(descReg, prometheus.GaugeValue, b2f(reg))
	ch <- prometheus.MustNewConstMetric(descData, prometheus.GaugeValue, b2f(st.Data.Connected))
	ch <- prometheus.MustNewConstMetric(descRecon, prometheus.CounterValue, float64(st.Reconnects))
	ch <- prometheus.MustNewConstMetric(descDem, prometheus.GaugeValue, b2f(st.Demoted))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// StatusJSON implements supervisor.Extra.
func (s *Service) StatusJSON() any { return s.Status() }

// StatusLines implements supervisor.Extra: one line for the console.
func (s *Service) StatusLines() []string {
	st := s.Status()
	data := "down"
	if st.Data.Connected {
		data = "up"
		if st.Data.IPv4.IsValid() {
			data += " " + st.Data.IPv4.String()
		}
	}
	l := fmt.Sprintf("modem: %s %s %s %s %q rssi %s rsrp %s sinr %s data %s reconnects %d", orDash(st.State), orDash(st.Manufacturer), orDash(st.Model),
		orDash(st.RAT)+"/"+orDash(st.Registration), st.Operator, fmtp(st.RSSI), fmtp(st.RSRP), fmtp(st.SINR), data, st.Reconnects)
	if st.NRRSRP != nil {
		l += fmt.Sprintf(" nr-rsrp %s nr-sinr %s", fmtp(st.NRRSRP), fmtp(st.NRSINR))
	}
	if st.Demoted {
		l += " DEMOTED (weak signal)"
	}
	if st.LastError != "" {
		l += " last error: " + st.LastError
	}
	return []string{l}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
