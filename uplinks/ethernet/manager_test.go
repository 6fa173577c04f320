package ethernet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/lifeline-router/lifeline/uplinks/dhcp4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string // "" = valid; else the error's prefix (the field)
	}{
		{Config{DHCP: true}, ""},
		{Config{DHCP: true, VLAN: 7, Hostname: "lifeline-1"}, ""},
		{Config{Address: "192.0.2.10/24", Gateway: "192.0.2.1"}, ""},
		{Config{Address: "192.0.2.10/32", Gateway: "198.51.100.1"}, ""}, // point-to-point style
		{Config{Address: "192.0.2.10/24"}, ""},
		{Config{DHCP: true, VLAN: 5000}, "vlan: 5000 out of range 1..4094"},
		{Config{DHCP: true, VLAN: -1}, "vlan: -1 out of range"},
		{Config{}, "address: required"},
		{Config{DHCP: true, Address: "192.0.2.10/24"}, "address:"},
		{Config{DHCP: true, Gateway: "192.0.2.1"}, "gateway:"},
		{Config{Address: "192.0.2.10"}, "address:"},
		{Config{Address: "2001:db8::1/64"}, "address:"},
		{Config{Address: "192.0.2.10/24", Gateway: "198.51.100.1"}, "gateway: 198.51.100.1 is not inside"},
		{Config{Address: "192.0.2.10/24", Gateway: "fiber"}, "gateway:"},
		{Config{Address: "192.0.2.10/24", Gateway: "192.0.2.10"}, "gateway:"},
		{Config{DHCP: true, Hostname: "bad name"}, "hostname:"},
	} {
		err := tc.c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.c, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want prefix %q", tc.c, err, tc.want)
		}
	}
}

func TestNewRejectsKernelTables(t *testing.T) {
	for _, table := range []int{0, -1, 253, 254, 255} {
		_, err := New(Options{Name: "fiber", Device: "eth0", Table: table, Config: Config{DHCP: true}, Kernel: &fakeKernel{}})
		if err == nil || !strings.Contains(err.Error(), "table:") {
			t.Errorf("table %d: %v, want a table: error", table, err)
		}
	}
	_, err := New(Options{Name: "fiber", Device: "eth0", Table: 100, Config: Config{DHCP: true, VLAN: 4095}, Kernel: &fakeKernel{}})
	if err == nil || !strings.Contains(err.Error(), "vlan: 4095 out of range 1..4094") {
		t.Errorf("vlan 4095: %v", err)
	}
}

// fakeKernel records side effects; carrier is driven by the test.
type fakeKernel struct {
	mu      sync.Mutex
	calls   []string
	carrier chan bool
	dial    func() (dhcp4.Transport, error)
}

func (k *fakeKernel) rec(format string, args ...any) {
	k.mu.Lock()
	k.calls = append(k.calls, fmt.Sprintf(format, args...))
	k.mu.Unlock()
}

func (k *fakeKernel) list() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.calls...)
}

func (k *fakeKernel) EnsureVLAN(p string, vid int) (string, error) {
	k.rec("vlan %s %d", p, vid)
	return VLANName(p, vid), nil
}
func (k *fakeKernel) SetUp(dev string) error { k.rec("up %s", dev); return nil }
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
func (k *fakeKernel) ReplaceAddr(dev string, p netip.Prefix, valid, pref time.Duration) error {
	k.rec("addr replace %s %v finite=%v", dev, p, valid > 0)
	return nil
}
func (k *fakeKernel) DelAddr(dev string, p netip.Prefix) error {
	k.rec("addr del %s %v", dev, p)
	return nil
}
func (k *fakeKernel) ReplaceDefault(dev string, gw, src netip.Addr, table int) error {
	k.rec("route replace default via %v dev %s src %v table %d", gw, dev, src, table)
	return nil
}
func (k *fakeKernel) DelDefault(dev string, table int) error {
	k.rec("route del default dev %s table %d", dev, table)
	return nil
}
func (k *fakeKernel) DialDHCP(dev string, o dhcp4.TransportOptions) (dhcp4.Transport, error) {
	k.rec("dhcp %s", dev)
	return k.dial()
}

// scripted answers Discover with a lease and Renew with a NAK.
type scripted struct{ lease func() *dhcp4.Lease }

func (s scripted) Discover(ctx context.Context) (*dhcp4.Lease, error) { return s.lease(), nil }
func (s scripted) Reboot(ctx context.Context, l *dhcp4.Lease) (*dhcp4.Lease, error) {
	return s.lease(), nil
}
func (s scripted) Renew(ctx context.Context, l *dhcp4.Lease) (*dhcp4.Lease, error) {
	return nil, fmt.Errorf("renew: %w", dhcp4.ErrNAK)
}
func (s scripted) Rebind(ctx context.Context, l *dhcp4.Lease) (*dhcp4.Lease, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (s scripted) Close() error { return nil }

func testLease(t *testing.T, lease, t1 time.Duration) *dhcp4.Lease {
	m, err := dhcpv4.New(
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.ParseIP("192.0.2.10")),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.ParseIP("192.0.2.1"))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("192.0.2.1"))),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lease)),
		dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(t1)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := dhcp4.FromACK(nil, m, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func runFake(t *testing.T, o Options) (*Manager, *fakeKernel) {
	t.Helper()
	k := o.Kernel.(*fakeKernel)
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return m, k
}

func TestManagerDHCPOverVLAN(t *testing.T) {
	k := &fakeKernel{carrier: make(chan bool)}
	k.dial = func() (dhcp4.Transport, error) {
		return scripted{lease: func() *dhcp4.Lease { return testLease(t, time.Hour, time.Second) }}, nil
	}
	var mu sync.Mutex
	var seen []Event
	m, _ := runFake(t, Options{Name: "fiber", Device: "eth0", Table: 101, Config: Config{DHCP: true, VLAN: 7}, Kernel: k,
		OnEvent: func(e Event) { mu.Lock(); seen = append(seen, e); mu.Unlock() }})
	k.carrier <- true
	e := waitEvent(t, m, true, 2*time.Second)
	if e.Reason != "dhcp obtained" {
		t.Errorf("event %+v", e)
	}
	want := []string{
		"vlan eth0 7", "up eth0.7", "dhcp eth0.7",
		"addr replace eth0.7 192.0.2.10/24 finite=true",
		"route replace default via 192.0.2.1 dev eth0.7 src 192.0.2.10 table 101",
	}
	if got := k.list(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The NAK at T1 (1 s) is a loss, reported before the cleanup.
	e = waitEvent(t, m, false, 3*time.Second)
	if e.Reason != "dhcp lease nak" {
		t.Errorf("event %+v", e)
	}
	waitFor(t, time.Second, "cleanup", func() bool {
		c := k.list()
		return len(c) >= 7 && c[5] == "route del default dev eth0.7 table 101" && c[6] == "addr del eth0.7 192.0.2.10/24"
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 || !seen[0].Up || seen[1].Up {
		t.Errorf("OnEvent saw %+v", seen)
	}
}

func TestManagerCarrierLossIsImmediate(t *testing.T) {
	k := &fakeKernel{carrier: make(chan bool)}
	m, _ := runFake(t, Options{Name: "fiber", Device: "eth0", Table: 101,
		Config: Config{Address: "192.0.2.10/24", Gateway: "192.0.2.1"}, Kernel: k})
	k.carrier <- true
	waitEvent(t, m, true, 2*time.Second)
	cut := time.Now()
	k.carrier <- false
	e := waitEvent(t, m, false, 2*time.Second)
	if e.Reason != "carrier lost" || e.At.Sub(cut) > 100*time.Millisecond {
		t.Errorf("event %+v after %v", e, e.At.Sub(cut))
	}
	if st := m.Status(); st.Up || st.Carrier {
		t.Errorf("status %+v", st)
	}
	k.carrier <- true
	waitEvent(t, m, true, 2*time.Second)
	for _, c := range k.list() {
		if strings.Contains(c, "table 254") || (strings.Contains(c, "route") && !strings.Contains(c, "table 101")) {
			t.Errorf("route outside the uplink's table: %s", c)
		}
	}
}

// A DHCP socket that cannot be opened is retried, not fatal.
func TestManagerRetriesDial(t *testing.T) {
	k := &fakeKernel{carrier: make(chan bool)}
	var n int
	var mu sync.Mutex
	k.dial = func() (dhcp4.Transport, error) {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n == 1 {
			return nil, errors.New("socket: no such device")
		}
		return scripted{lease: func() *dhcp4.Lease { return testLease(t, time.Hour, 30*time.Minute) }}, nil
	}
	m, _ := runFake(t, Options{Name: "wifi", Device: "wlan0", Table: 102, Config: Config{DHCP: true}, Kernel: k})
	k.carrier <- true
	waitEvent(t, m, true, 5*time.Second)
	if st := m.Status(); st.LastError != "" || !st.Up {
		t.Errorf("status %+v", st)
	}
}

func TestCollector(t *testing.T) {
	k := &fakeKernel{carrier: make(chan bool)}
	k.dial = func() (dhcp4.Transport, error) {
		return scripted{lease: func() *dhcp4.Lease { return testLease(t, time.Hour, 30*time.Minute) }}, nil
	}
	m, _ := runFake(t, Options{Name: "fiber", Device: "eth0", Table: 101, Config: Config{DHCP: true}, Kernel: k})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	gather := func() map[string]*dto.Metric {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*dto.Metric{}
		for _, mf := range mfs {
			out[mf.GetName()] = mf.GetMetric()[0]
		}
		return out
	}
	if g := gather(); g["uplink_address_up"].GetGauge().GetValue() != 0 || g["uplink_lease_expiry_timestamp_seconds"] != nil {
		t.Errorf("before carrier: %v", g)
	}
	k.carrier <- true
	e := waitEvent(t, m, true, 2*time.Second)
	g := gather()
	if g["uplink_address_up"].GetGauge().GetValue() != 1 {
		t.Errorf("uplink_address_up = %v", g["uplink_address_up"])
	}
	if v := g["uplink_lease_expiry_timestamp_seconds"].GetGauge().GetValue(); v != float64(e.Lease.Expiry().Unix()) {
		t.Errorf("expiry metric %v, want %v", v, e.Lease.Expiry().Unix())
	}
	var labels []string
	for _, lp := range g["uplink_address_info"].GetLabel() {
		labels = append(labels, lp.GetName()+"="+lp.GetValue())
	}
	if got := strings.Join(labels, ","); got != "address=192.0.2.10/24,device=eth0,gateway=192.0.2.1,mode=dhcp,uplink=fiber" {
		t.Errorf("uplink_address_info labels %s", got)
	}
	if lines := m.StatusLines(); len(lines) < 2 || !strings.Contains(lines[0], "192.0.2.10/24 via 192.0.2.1 table 101") {
		t.Errorf("status lines %q", lines)
	}
}
