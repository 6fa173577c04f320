package wifi

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descAssoc    = prometheus.NewDesc("uplink_wifi_associated", "1 when associated to an access point.", []string{"uplink"}, nil)
	descSignal   = prometheus.NewDesc("uplink_wifi_signal_dbm", "Signal of the current access point (dBm).", []string{"uplink"}, nil)
	descRate     = prometheus.NewDesc("uplink_wifi_link_rate_mbps", "Transmit link rate (Mbit/s).", []string{"uplink"}, nil)
	descFreq     = prometheus.NewDesc("uplink_wifi_frequency_mhz", "Operating frequency (MHz).", []string{"uplink"}, nil)
	descInfo     = prometheus.NewDesc("uplink_wifi_info", "Current SSID, BSSID and band (value always 1).", []string{"uplink", "ssid", "bssid", "band"}, nil)
	descDemoted  = prometheus.NewDesc("uplink_wifi_demoted", "1 while the signal policy demotes the uplink.", []string{"uplink"}, nil)
	descRoams    = prometheus.NewDesc("uplink_wifi_roams_total", "Roams between access points.", []string{"uplink"}, nil)
	descRestarts = prometheus.NewDesc("uplink_wifi_supplicant_restarts_total", "wpa_supplicant restarts.", []string{"uplink"}, nil)
)

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Describe implements prometheus.Collector (the addressing metrics of the
// ethernet manager included).
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAssoc, descSignal, descRate, descFreq, descInfo, descDemoted, descRoams, descRestarts} {
		ch <- d
	}
	m.eth.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	st := m.Status()
	u := st.Uplink
	ch <- prometheus.MustNewConstMetric(descAssoc, prometheus.GaugeValue, b2f(st.Associated), u)
	ch <- prometheus.MustNewConstMetric(descDemoted, prometheus.GaugeValue, b2f(st.Demoted), u)
	ch <- prometheus.MustNewConstMetric(descRoams, prometheus.CounterValue, float64(st.Roams), u)
	ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(st.Restarts), u)
	if st.Associated {
		ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, u, st.SSID, st.BSSID, st.Band)
		ch <- prometheus.MustNewConstMetric(descFreq, prometheus.GaugeValue, float64(st.FrequencyMHz), u)
		if st.SignalDBm != 0 {
			ch <- prometheus.MustNewConstMetric(descSignal, prometheus.GaugeValue, float64(st.SignalDBm), u)
		}
		if st.LinkRateMbps != 0 {
			ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, float64(st.LinkRateMbps), u)
		}
	}
	m.eth.Collect(ch)
}

// StatusJSON is the uplink's part of `lifeline status --json`.
func (m *Manager) StatusJSON() any { return m.Status() }

// StatusLines is the uplink's part of `lifeline status` on a console.
func (m *Manager) StatusLines() []string {
	st := m.Status()
	l := fmt.Sprintf("%s %s wifi %s", st.Uplink, st.Interface, st.State)
	if st.Associated {
		l += fmt.Sprintf(" ssid=%q bssid=%s %d MHz (%s GHz) %d dBm %d Mbit/s", st.SSID, st.BSSID, st.FrequencyMHz, st.Band, st.SignalDBm, st.LinkRateMbps)
	}
	if st.Demoted {
		l += " DEMOTED (weak signal)"
	}
	lines := []string{l}
	if st.LastError != "" {
		lines = append(lines, "  last error: "+st.LastError)
	}
	return append(lines, m.eth.StatusLines()...)
}
