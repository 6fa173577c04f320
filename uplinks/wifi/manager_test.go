package wifi

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/lifeline-router/lifeline/uplinks/dhcp4"
	"github.com/lifeline-router/lifeline/uplinks/ethernet"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeKernel stands in for netlink: carrier is driven by the test, DHCP
// always grants 192.0.2.10/24 for an hour.
type fakeKernel struct {
	carrier chan bool
	mu      sync.Mutex
	calls   []string
}

func (k *fakeKernel) rec(s string) { k.mu.Lock(); k.calls = append(k.calls, s); k.mu.Unlock() }
func (k *fakeKernel) EnsureVLAN(p string, vid int) (string, error) {
	return "", fmt.Errorf("no VLAN on wifi")
}
func (k *fakeKernel) SetUp(dev string) error { return nil }
func (k *fakeKernel) WatchCarrier(ctx context.Context, dev string, fn func(bool)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-k.carrier:
			fn(c)
		}
	}
}
func (k *fakeKernel) ReplaceAddr(dev string, p netip.Prefix, v, pr time.Duration) error {
	k.rec("addr " + p.String())
	return nil
}
func (k *fakeKernel) DelAddr(dev string, p netip.Prefix) error { return nil }
func (k *fakeKernel) ReplaceDefault(dev string, gw, src netip.Addr, table int) error {
	k.rec(fmt.Sprintf("default via %v table %d", gw, table))
	return nil
}
func (k *fakeKernel) DelDefault(dev string, table int) error { return nil }
func (k *fakeKernel) DialDHCP(dev string, o dhcp4.TransportOptions) (dhcp4.Transport, error) {
	return grant{}, nil
}

type grant struct{}

func (grant) lease() (*dhcp4.Lease, error) {
	m, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.ParseIP("192.0.2.10")),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithOption(dhcpv4.OptRouter(net.ParseIP("192.0.2.1"))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("192.0.2.1"))),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)))
	return dhcp4.FromACK(nil, m, time.Now())
}
func (g grant) Discover(context.Context) (*dhcp4.Lease, error)             { return g.lease() }
func (g grant) Reboot(context.Context, *dhcp4.Lease) (*dhcp4.Lease, error) { return g.lease() }
func (g grant) Renew(context.Context, *dhcp4.Lease) (*dhcp4.Lease, error)  { return g.lease() }
func (g grant) Rebind(context.Context, *dhcp4.Lease) (*dhcp4.Lease, error) { return g.lease() }
func (grant) Close() error                                                 { return nil }

func waitUp(t *testing.T, m *Manager, up bool, d time.Duration) ethernet.Event {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e := <-m.Events():
			if e.Up == up {
				return e
			}
		case <-deadline:
			t.Fatalf("no up=%v event within %v; status %+v", up, d, m.Status())
		}
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The event flow against a fake control socket: association + DHCP make
// the uplink up, SIGNAL_POLL feeds status and metrics, weak signal
// demotes, a scan finding 6 GHz steers there, a roam keeps it up, a
// disconnect is reported at once.
func TestManagerEventsWithFakeSupplicant(t *testing.T) {
	run := t.TempDir()
	f := newFakeSupplicant(t, run+"/ctrl", "wlan0")
	k := &fakeKernel{carrier: make(chan bool)}
	var dmu sync.Mutex
	var demotions []bool
	m, err := New(Options{
		Name: "wifi", Interface: "wlan0", Table: 102, RunDir: run, NoSpawn: true, Kernel: k,
		Config: Config{SSID: "backhaul", Password: "correct horse", DemoteSignal: -75, Hysteresis: 5,
			DemoteHold: Duration(300 * time.Millisecond), PollInterval: Duration(100 * time.Millisecond)},
		OnDemote:     func(name string, d bool) { dmu.Lock(); demotions = append(demotions, d); dmu.Unlock() },
		RoamCooldown: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, 3*time.Second, "ATTACH", func() bool { return f.attachedN() == 1 })
	f.set("STATUS", statusReply)
	f.set("SIGNAL_POLL", signalReply)
	f.event(evConnected)
	k.carrier <- true // the kernel's view: operstate up after the 4-way handshake
	e := waitUp(t, m, true, 3*time.Second)
	if !strings.Contains(e.Reason, "dhcp") && !strings.Contains(e.Reason, "wifi connected") {
		t.Errorf("up event %+v", e)
	}
	waitFor(t, 2*time.Second, "signal polled", func() bool { return m.Status().LinkRateMbps == 866 })
	// Connected on 5 GHz while 6 GHz is preferred: one scan to look.
	waitFor(t, 2*time.Second, "SCAN after connecting below the first band", func() bool { return f.sawExact("SCAN") })
	st := m.Status()
	if st.SSID != "backhaul" || st.BSSID != "02:00:00:00:01:00" || st.FrequencyMHz != 5180 || st.Band != "5" ||
		st.SignalDBm != -52 || !st.Up || st.IP.Address.String() != "192.0.2.10/24" || st.KeyMgmt != "SAE" {
		t.Errorf("status %+v", st)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["uplink_wifi_signal_dbm"] != -52 || got["uplink_wifi_link_rate_mbps"] != 866 ||
		got["uplink_wifi_frequency_mhz"] != 5180 || got["uplink_wifi_associated"] != 1 || got["uplink_address_up"] != 1 {
		t.Errorf("metrics %v", got)
	}

	// Weak signal held past the hold time demotes; recovery restores.
	f.set("SIGNAL_POLL", "RSSI=-82\nLINKSPEED=24\nNOISE=9999\nFREQUENCY=5180\n")
	waitFor(t, 3*time.Second, "demoted", func() bool { return m.Status().Demoted })
	f.set("SIGNAL_POLL", signalReply)
	waitFor(t, 3*time.Second, "restored", func() bool { return !m.Status().Demoted })
	dmu.Lock()
	if fmt.Sprint(demotions) != "[true false]" {
		t.Errorf("OnDemote calls %v, want [true false]", demotions)
	}
	dmu.Unlock()

	// A scan that finds our SSID on 6 GHz steers there.
	f.set("SCAN_RESULTS", scanReply)
	f.event(evScan)
	waitFor(t, 2*time.Second, "ROAM to 6 GHz", func() bool { return f.sawCmd("ROAM 02:00:00:00:03:00") })

	// Roam: a CONNECTED for another BSSID keeps the uplink up.
	f.set("STATUS", strings.Replace(strings.Replace(statusReply, "01:00", "02:00", 1), "freq=5180", "freq=5955", 1))
	f.event(evConnected2)
	e = <-m.Events()
	if !e.Up || !strings.Contains(e.Reason, "roamed 02:00:00:00:01:00 -> 02:00:00:00:02:00 (5955 MHz)") {
		t.Errorf("roam event %+v", e)
	}
	if st := m.Status(); st.Roams != 1 || st.Band != "6" {
		t.Errorf("after roam %+v", st)
	}

	// Disconnect: down at once, before any carrier change.
	cut := time.Now()
	f.event(evDisconnected)
	e = waitUp(t, m, false, 2*time.Second)
	if !strings.HasPrefix(e.Reason, "wifi disconnected reason=3") || e.At.Sub(cut) > 200*time.Millisecond {
		t.Errorf("down event %+v after %v", e, e.At.Sub(cut))
	}
	if st := m.Status(); st.Associated || st.Up || st.BSSID != "" {
		t.Errorf("after disconnect %+v", st)
	}
	if lines := m.StatusLines(); len(lines) < 2 || !strings.Contains(lines[0], "wifi DISCONNECTED") {
		t.Errorf("status lines %q", lines)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(Options{Name: "wifi", Interface: "wlan0", Table: 102, Kernel: &fakeKernel{},
		Config: Config{SSID: "x", Password: "1234567"}})
	if err == nil || !strings.Contains(err.Error(), "password: SAE password too short: 7 characters") {
		t.Errorf("%v", err)
	}
	_, err = New(Options{Name: "wifi", Interface: "wlan0", Table: 254, Kernel: &fakeKernel{},
		Config: Config{SSID: "x", Password: "12345678"}})
	if err == nil || !strings.Contains(err.Error(), "table: 254") {
		t.Errorf("%v", err)
	}
}
