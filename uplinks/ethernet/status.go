package ethernet

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descAddrUp  = prometheus.NewDesc("uplink_address_up", "1 when the uplink device has carrier and its address (static or leased).", []string{"uplink"}, nil)
	descAddr    = prometheus.NewDesc("uplink_address_info", "The uplink's address and gateway (value always 1).", []string{"uplink", "device", "mode", "address", "gateway"}, nil)
	descExpiry  = prometheus.NewDesc("uplink_lease_expiry_timestamp_seconds", "When the DHCP lease ends (Unix time).", []string{"uplink"}, nil)
	descRenewAt = prometheus.NewDesc("uplink_lease_renew_timestamp_seconds", "When the DHCP lease is renewed (T1, Unix time).", []string{"uplink"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAddrUp
	ch <- descAddr
	ch <- descExpiry
	ch <- descRenewAt
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	st := m.Status()
	up := 0.0
	if st.Up {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descAddrUp, prometheus.GaugeValue, up, st.Uplink)
	if st.Address.IsValid() {
		gw := ""
		if st.Gateway.IsValid() {
			gw = st.Gateway.String()
		}
		ch <- prometheus.MustNewConstMetric(descAddr, prometheus.GaugeValue, 1, st.Uplink, st.Device, st.Mode, st.Address.String(), gw)
	}
	if !st.LeaseExpiry.IsZero() {
		ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, float64(st.LeaseExpiry.Unix()), st.Uplink)
	}
	if !st.LeaseRenew.IsZero() {
		ch <- prometheus.MustNewConstMetric(descRenewAt, prometheus.GaugeValue, float64(st.LeaseRenew.Unix()), st.Uplink)
	}
}

// StatusJSON is the uplink's part of `lifeline status --json`.
func (m *Manager) StatusJSON() any { return m.Status() }

// StatusLines is the uplink's part of `lifeline status` on a console.
func (m *Manager) StatusLines() []string {
	st := m.Status()
	state := "down"
	if st.Up {
		state = "up"
	}
	l := fmt.Sprintf("%s %s (%s) %s carrier=%v", st.Uplink, st.Device, st.Mode, state, st.Carrier)
	if st.Address.IsValid() {
		l += fmt.Sprintf(" %v via %v table %d", st.Address, st.Gateway, st.Table)
	}
	lines := []string{l}
	if !st.LeaseExpiry.IsZero() {
		lines = append(lines, fmt.Sprintf("  lease from %v renews in %v, expires in %v", st.LeaseServer,
			time.Until(st.LeaseRenew).Round(time.Second), time.Until(st.LeaseExpiry).Round(time.Second)))
	}
	if st.Reason != "" {
		lines = append(lines, "  last change: "+st.Reason+" at "+st.Since.Format(time.RFC3339))
	}
	if st.LastError != "" {
		lines = append(lines, "  error: "+st.LastError)
	}
	return lines
}
