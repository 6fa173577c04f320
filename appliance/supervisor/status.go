package supervisor

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/failover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"net/http"
)

// Status is what `lifeline status` shows, on the serial console or as JSON.
type Status struct {
	Version   string           `json:"version"`
	Ready     bool             `json:"ready"`
	Error     string           `json:"error,omitempty"`
	Preferred string           `json:"preferred"`
	Uplinks   []UplinkStatus   `json:"uplinks"`
	Endpoints []EndpointStatus `json:"mptcp_endpoints"`
	Subflows  []SubflowStatus  `json:"mptcp_subflows"`
	Extra     map[string]any   `json:"extra,omitempty"`
	// Lines are one-line summaries of the extras for the console table.
	Lines []string `json:"lines,omitempty"`
}

// Extra is a part (modem, SQM, WiFi) that adds itself to the status.
type Extra interface {
	// StatusJSON is what `lifeline status --json` shows under its name.
	StatusJSON() any
	// StatusLines are compact lines for the serial console.
	StatusLines() []string
}

// UplinkStatus is one uplink's row.
type UplinkStatus struct {
	Name      string  `json:"name"`
	Device    string  `json:"device"`
	Role      string  `json:"role"`
	Carrier   bool    `json:"carrier"`
	Alive     bool    `json:"alive"`
	State     string  `json:"state"`
	Mode      string  `json:"mode"`
	Tunnel    string  `json:"tunnel"`
	TunnelIP  string  `json:"tunnel_address"`
	WGMode    string  `json:"wireguard"`
	Handshake string  `json:"last_handshake,omitempty"`
	RTTms     float64 `json:"probe_rtt_ms"`
	TimeoutMS float64 `json:"probe_timeout_ms"`
	Loss      float64 `json:"probe_loss"`
	Demoted   bool    `json:"demoted"`
}

// EndpointStatus is one MPTCP endpoint.
type EndpointStatus struct {
	ID    uint8  `json:"id"`
	Addr  string `json:"addr"`
	Flags string `json:"flags"`
	Dev   int    `json:"ifindex"`
}

// SubflowStatus is one MPTCP subflow.
type SubflowStatus struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
	Backup bool   `json:"backup"`
}

// Status collects the current view.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	st := Status{Version: Version, Ready: s.ready, Preferred: s.preferred}
	if s.lastErr != nil {
		st.Error = s.lastErr.Error()
	}
	carrier := map[string]bool{}
	demoted := map[string]bool{}
	modes := map[string]failover.Mode{}
	for k, v := range s.carrier {
		carrier[k] = v
	}
	for k, v := range s.demoted {
		demoted[k] = v
	}
	for k, v := range s.modes {
		modes[k] = v
	}
	s.mu.Unlock()
	s.mu.Lock()
	names := make([]string, 0, len(s.extras))
	for n := range s.extras {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		e := s.extras[n]
		if st.Extra == nil {
			st.Extra = map[string]any{}
		}
		st.Extra[n] = e.StatusJSON()
		st.Lines = append(st.Lines, e.StatusLines()...)
	}
	s.mu.Unlock()
	for _, p := range s.plans {
		us := UplinkStatus{
			Name: p.u.Name, Device: p.u.Device, Role: string(p.u.Role),
			Carrier: carrier[p.u.Name], State: string(s.policy.State(p.u.Name)),
			Mode: modes[p.u.Name].String(), Tunnel: p.u.WireGuard.Interface,
			TunnelIP: p.tunnel.String(), Demoted: demoted[p.u.Name],
		}
		if pr := s.probers[p.u.Name]; pr != nil {
			snap := pr.Snapshot()
			us.Alive = snap.Alive
			us.RTTms = float64(snap.SRTT) / 1e6
			us.TimeoutMS = float64(snap.Timeout) / 1e6
			us.Loss = snap.Loss
		}
		if s.wgm != nil {
			us.WGMode = s.wgm.Mode(p.u.WireGuard.Interface)
			if d, err := s.wgm.Device(p.u.WireGuard.Interface); err == nil && len(d.Peers) > 0 && !d.Peers[0].LastHandshakeTime.IsZero() {
				us.Handshake = time.Since(d.Peers[0].LastHandshakeTime).Round(time.Second).String() + " ago"
			}
		}
		st.Uplinks = append(st.Uplinks, us)
	}
	if s.pm != nil {
		if eps, err := s.pm.Endpoints(); err == nil {
			for _, e := range eps {
				st.Endpoints = append(st.Endpoints, EndpointStatus{ID: e.ID, Addr: e.Addr.String(), Flags: e.Flags.String(), Dev: e.IfIndex})
			}
		}
		if sfs, err := s.pm.Subflows(); err == nil {
			for _, f := range sfs {
				st.Subflows = append(st.Subflows, SubflowStatus{Local: f.Local.String(), Remote: f.Remote.String(), Backup: f.Backup})
			}
			sort.Slice(st.Subflows, func(i, j int) bool { return st.Subflows[i].Local < st.Subflows[j].Local })
		}
	}
	return st
}

// WriteTable prints a status compactly for a serial console (80 columns).
func WriteTable(w io.Writer, st Status) error {
	fmt.Fprintf(w, "lifeline %s  ready=%v  preferred=%s\n", st.Version, st.Ready, orDash(st.Preferred))
	if st.Error != "" {
		fmt.Fprintf(w, "error: %s\n", st.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPLINK\tDEV\tROLE\tCARRIER\tSTATE\tMPTCP\tTUNNEL\tRTT\tLOSS\tHANDSHAKE")
	for _, u := range st.Uplinks {
		role := u.Role
		if u.Demoted {
			role += "(demoted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1fms\t%.0f%%\t%s\n", u.Name, u.Device, role, yesNo(u.Carrier), u.State, u.Mode,
			u.Tunnel+"/"+u.WGMode, u.RTTms, 100*u.Loss, orDash(u.Handshake))
	}
	tw.Flush()
	var eps []string
	for _, e := range st.Endpoints {
		eps = append(eps, fmt.Sprintf("%d:%s[%s]", e.ID, e.Addr, e.Flags))
	}
	fmt.Fprintf(w, "endpoints: %s\n", orDash(strings.Join(eps, "  ")))
	var sfs []string
	for _, f := range st.Subflows {
		b := ""
		if f.Backup {
			b = " backup"
		}
		sfs = append(sfs, f.Local+"→"+f.Remote+b)
	}
	fmt.Fprintf(w, "subflows:  %s\n", orDash(strings.Join(sfs, ", ")))
	for _, l := range st.Lines {
		fmt.Fprintln(w, l)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// metrics exposes the supervisor on /metrics. Names without a prefix
// (mptcp_active_subflows, mptcp_backup_subflows) are the seed's, kept so
// existing alert rules keep working.
type metrics struct {
	s         *Supervisor
	reg       *prometheus.Registry
	failovers *prometheus.CounterVec
}

var (
	descActive  = prometheus.NewDesc("mptcp_active_subflows", "MPTCP subflows that carry data (not backup).", nil, nil)
	descBackup  = prometheus.NewDesc("mptcp_backup_subflows", "MPTCP subflows held as backup.", nil, nil)
	descUp      = prometheus.NewDesc("uplink_up", "1 when the uplink is in use (state up).", []string{"uplink"}, nil)
	descState   = prometheus.NewDesc("lifeline_uplink_state", "0 down, 1 recovering (hold-down), 2 up.", []string{"uplink"}, nil)
	descCarrier = prometheus.NewDesc("lifeline_uplink_carrier", "1 when the uplink device has carrier.", []string{"uplink"}, nil)
	descRTT     = prometheus.NewDesc("lifeline_probe_rtt_seconds", "Smoothed in-tunnel probe RTT.", []string{"uplink"}, nil)
	descLoss    = prometheus.NewDesc("lifeline_probe_loss_ratio", "Share of recent in-tunnel probes unanswered.", []string{"uplink"}, nil)
	descReady   = prometheus.NewDesc("lifeline_ready", "1 once the configuration is applied.", nil, nil)
)

func newMetrics(s *Supervisor) *metrics {
	m := &metrics{s: s, reg: prometheus.NewRegistry()}
	m.failovers = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeline_failovers_total", Help: "Uplinks taken out of use after a failure."}, []string{"uplink"})
	m.reg.MustRegister(m.failovers, m, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// AddExtra adds a part's status under name.
func (s *Supervisor) AddExtra(name string, e Extra) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.extras == nil {
		s.extras = map[string]Extra{}
	}
	s.extras[name] = e
}

// Register adds collectors from other parts (modem, sqm).
func (s *Supervisor) Register(c prometheus.Collector) error { return s.metrics.reg.Register(c) }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descBackup, descUp, descState, descCarrier, descRTT, descLoss, descReady} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.s.Status()
	var active, backup float64
	for _, f := range st.Subflows {
		if f.Backup {
			backup++
		} else {
			active++
		}
	}
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, active)
	ch <- prometheus.MustNewConstMetric(descBackup, prometheus.GaugeValue, backup)
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(st.Ready))
	for _, u := range st.Uplinks {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, b2f(u.State == string(failover.StateUp)), u.Name)
		var sv float64
		switch failover.State(u.State) {
		case failover.StateRecovering:
			sv = 1
		case failover.StateUp:
			sv = 2
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, sv, u.Name)
		ch <- prometheus.MustNewConstMetric(descCarrier, prometheus.GaugeValue, b2f(u.Carrier), u.Name)
		ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, u.RTTms/1000, u.Name)
		ch <- prometheus.MustNewConstMetric(descLoss, prometheus.GaugeValue, u.Loss, u.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
