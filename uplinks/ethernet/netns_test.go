package ethernet

// Integration tests against the real kernel and real DHCP servers: the
// client side lives in namespace "c", the server in "s", joined by a veth
// pair c0 <-> s0. dnsmasq (Debian's) covers the everyday lease; the Go
// server4 (dhcp4test) covers what dnsmasq cannot do quickly: lease times
// below its two-minute floor, silence, NAK.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/lifeline-router/lifeline/uplinks/dhcp4"
	"github.com/lifeline-router/lifeline/uplinks/dhcp4/dhcp4test"
	"github.com/vishvananda/netns"
)

var nsSeq atomic.Int32

type world struct {
	t      *testing.T
	c, s   string // namespace names
	cns    netns.NsHandle
	sns    netns.NsHandle
	kernel Kernel
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
}

func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newWorld builds c and s with c0 <-> s0; s0 gets 10.77.0.1/24.
func newWorld(t *testing.T) *world {
	t.Helper()
	needRoot(t)
	id := fmt.Sprintf("lleth%d-%d", os.Getpid(), nsSeq.Add(1))
	w := &world{t: t, c: id + "c", s: id + "s"}
	for _, ns := range []string{w.c, w.s} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipCmd(t, "-n", w.c, "link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns", w.s)
	ipCmd(t, "-n", w.s, "addr", "add", "10.77.0.1/24", "dev", "s0")
	ipCmd(t, "-n", w.s, "link", "set", "s0", "up")
	ipCmd(t, "-n", w.s, "link", "set", "lo", "up")
	var err error
	if w.cns, err = netns.GetFromName(w.c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cns.Close() })
	if w.sns, err = netns.GetFromName(w.s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.sns.Close() })
	if w.kernel, err = NewKernel(w.cns, slog.Default()); err != nil {
		t.Fatal(err)
	}
	return w
}

type running struct {
	m      *Manager
	cancel context.CancelFunc
	done   chan error
}

func (w *world) start(t *testing.T, o Options) *running {
	t.Helper()
	if o.Name == "" {
		o.Name = "fiber"
	}
	if o.Device == "" {
		o.Device = "c0"
	}
	if o.Table == 0 {
		o.Table = 101
	}
	o.Kernel = w.kernel
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

// waitEvent returns the next event with the given level, failing after d.
func waitEvent(t *testing.T, m *Manager, up bool, d time.Duration) Event {
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

var (
	validRE = regexp.MustCompile(`valid_lft (\d+)sec`)
)

// checkKernel compares the uplink's address and route with `ip` output.
func (w *world) checkKernel(t *testing.T, dev string, addr netip.Prefix, gw netip.Addr, table int) {
	t.Helper()
	out := ipCmd(t, "-n", w.c, "-4", "addr", "show", "dev", dev)
	if !strings.Contains(out, "inet "+addr.String()+" ") {
		t.Errorf("ip addr show dev %s: no %v:\n%s", dev, addr, out)
	}
	routes := ipCmd(t, "-n", w.c, "-4", "route", "show", "table", strconv.Itoa(table))
	want := fmt.Sprintf("default via %v dev %s", gw, dev)
	if !strings.Contains(routes, want) {
		t.Errorf("ip route show table %d: want %q:\n%s", table, want, routes)
	}
	if main := ipCmd(t, "-n", w.c, "-4", "route", "show", "table", "main"); strings.Contains(main, "default") {
		t.Errorf("a default route leaked into the main table:\n%s", main)
	}
}

func (w *world) checkGone(t *testing.T, dev string, addr netip.Prefix, table int) {
	t.Helper()
	if out := ipCmd(t, "-n", w.c, "-4", "addr", "show", "dev", dev); strings.Contains(out, addr.Addr().String()) {
		t.Errorf("address %v still on %s after loss:\n%s", addr, dev, out)
	}
	if routes := ipCmd(t, "-n", w.c, "-4", "route", "show", "table", strconv.Itoa(table)); strings.Contains(routes, "default") {
		t.Errorf("default route still in table %d after loss:\n%s", table, routes)
	}
}

// dnsmasq runs the real dnsmasq in ns s and records its DHCP log lines.
type dnsmasq struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  []string
	done chan struct{}
}

func startDnsmasq(t *testing.T, w *world, extra ...string) *dnsmasq {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/dnsmasq"); err != nil {
			t.Skip("needs dnsmasq (apt-get install dnsmasq-base)")
		}
	}
	dir := t.TempDir()
	pid := filepath.Join(dir, "dnsmasq.pid")
	args := append([]string{"netns", "exec", w.s, bin,
		// --keep-in-foreground, not --no-daemon: only the former writes
		// the pid file we wait on.
		"--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null",
		"--pid-file=" + pid, "--dhcp-leasefile=" + filepath.Join(dir, "leases"),
		"--port=0", "--user=root", "--bind-interfaces", "--interface=s0", "--except-interface=lo",
		"--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
		"--dhcp-option=option:router,10.77.0.1",
		"--dhcp-authoritative", "--no-ping",
	}, extra...)
	d := &dnsmasq{cmd: exec.Command("ip", args...), done: make(chan struct{})}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(d.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.log = append(d.log, sc.Text())
			d.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		d.cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", strings.Join(d.lines(), "\n"))
		}
	})
	// The pid file appears once dnsmasq is listening.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(pid); err == nil && strings.TrimSpace(string(b)) != "" {
			break
		}
		select {
		case <-d.done:
			d.cmd.Wait()
			t.Fatalf("dnsmasq exited before writing its pid file:\n%s", strings.Join(d.lines(), "\n"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq wrote no pid file within 10s:\n%s", strings.Join(d.lines(), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d
}

func (d *dnsmasq) lines() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.log...)
}

func (d *dnsmasq) count(word string) int {
	n := 0
	for _, l := range d.lines() {
		if strings.Contains(l, word+"(") {
			n++
		}
	}
	return n
}

// The everyday case with the real dnsmasq: lease, address and route in the
// uplink's table, the lease file, reuse after a restart (INIT-REBOOT: no
// second DISCOVER), carrier loss reported and recovered.
func TestDnsmasqLease(t *testing.T) {
	w := newWorld(t)
	d := startDnsmasq(t, w)
	state := t.TempDir()
	o := Options{Config: Config{DHCP: true, Hostname: "lifeline-test"}, StateDir: state, Table: 101}
	r := w.start(t, o)
	e := waitEvent(t, r.m, true, 20*time.Second)
	if e.Reason != "dhcp obtained" || e.Lease == nil {
		t.Fatalf("first up event %+v", e)
	}
	l := e.Lease
	if !netip.MustParsePrefix("10.77.0.0/24").Contains(l.Address.Addr()) || l.Address.Bits() != 24 ||
		l.Router != netip.MustParseAddr("10.77.0.1") || l.LeaseSeconds != 120 {
		t.Fatalf("lease %+v, want 10.77.0.50-60/24 via 10.77.0.1 for 120s", l)
	}
	w.checkKernel(t, "c0", l.Address, l.Router, 101)
	out := ipCmd(t, "-n", w.c, "-4", "addr", "show", "dev", "c0")
	if m := validRE.FindStringSubmatch(out); m == nil {
		t.Errorf("address without a finite valid_lft:\n%s", out)
	} else if v, _ := strconv.Atoi(m[1]); v > 120 || v < 100 {
		t.Errorf("valid_lft %ds, want the lease's remaining ~120s", v)
	}
	st := r.m.Status()
	if !st.Up || st.Address != l.Address || st.LeaseExpiry.IsZero() || st.Mode != "dhcp" {
		t.Errorf("status %+v", st)
	}
	stored, err := (&dhcp4.Store{Path: r.m.LeasePath()}).Load()
	if err != nil || stored == nil || stored.Address != l.Address {
		t.Fatalf("lease file %s: %+v, %v", r.m.LeasePath(), stored, err)
	}

	// Restart: the stored lease is confirmed, not rediscovered.
	r.stop()
	discovers := d.count("DHCPDISCOVER")
	r2 := w.start(t, o)
	e = waitEvent(t, r2.m, true, 20*time.Second)
	if e.Reason != "dhcp rebooted" || e.Lease.Address != l.Address {
		t.Fatalf("after restart: %+v, want the stored lease rebooted", e)
	}
	if n := d.count("DHCPDISCOVER"); n != discovers {
		t.Errorf("restart sent %d DHCPDISCOVER; want INIT-REBOOT with the stored lease", n-discovers)
	}

	// Carrier loss is reported at once; carrier back brings the lease back.
	cut := time.Now()
	ipCmd(t, "-n", w.s, "link", "set", "s0", "down")
	e = waitEvent(t, r2.m, false, 5*time.Second)
	if e.Reason != "carrier lost" {
		t.Errorf("down event %+v, want carrier lost", e)
	}
	if d := e.At.Sub(cut); d > time.Second {
		t.Errorf("carrier loss reported after %v", d)
	}
	ipCmd(t, "-n", w.s, "link", "set", "s0", "up")
	e = waitEvent(t, r2.m, true, 20*time.Second)
	if e.Lease == nil || e.Lease.Address != l.Address {
		t.Errorf("after carrier back: %+v", e)
	}
	w.checkKernel(t, "c0", l.Address, l.Router, 101)
}

func startServer4(t *testing.T, w *world, lease time.Duration) *dhcp4test.Server {
	t.Helper()
	s, err := dhcp4test.Start(dhcp4test.Options{
		NetNS: w.sns, Iface: "s0", ServerIP: netip.MustParseAddr("10.77.0.1"), Prefix: 24,
		Pool: netip.MustParseAddr("10.77.0.100"), Router: netip.MustParseAddr("10.77.0.1"), Lease: lease,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func shortDHCP(o Options) Options {
	o.DHCPTimeout = 300 * time.Millisecond
	o.DHCPMinRetry = 200 * time.Millisecond
	return o
}

// Renew at T1 with a 4 s lease; then the server goes silent: rebind at T2
// and the loss reported at expiry, address and route removed.
func TestRenewRebindExpiry(t *testing.T) {
	w := newWorld(t)
	srv := startServer4(t, w, 4*time.Second)
	r := w.start(t, shortDHCP(Options{Config: Config{DHCP: true}, Table: 102, StateDir: t.TempDir()}))
	e := waitEvent(t, r.m, true, 10*time.Second)
	first := e.Lease
	w.checkKernel(t, "c0", first.Address, first.Router, 102)

	e = waitEvent(t, r.m, true, 5*time.Second)
	if e.Reason != "dhcp renewed" {
		t.Fatalf("second event %+v, want dhcp renewed", e)
	}
	if e.At.Before(first.RenewAt()) {
		t.Errorf("renewed at %v before T1 %v", e.At, first.RenewAt())
	}
	var renewReq *dhcp4test.Msg
	for _, m := range srv.Log() {
		if m.Type == dhcpv4.MessageTypeRequest && m.CIAddr == first.Address.Addr() {
			renewReq = &m
			break
		}
	}
	if renewReq == nil || renewReq.ServerID.IsValid() {
		t.Errorf("server saw no RENEWING request (ciaddr set, no server id): %+v", srv.Log())
	}

	last := e.Lease
	srv.SetMode(dhcp4test.Silent)
	e = waitEvent(t, r.m, false, 8*time.Second)
	if e.Reason != "dhcp lease expired" {
		t.Fatalf("down event %+v, want dhcp lease expired", e)
	}
	if late := e.At.Sub(last.Expiry()); late < 0 || late > 500*time.Millisecond {
		t.Errorf("expiry reported %v after the lease's end", late)
	}
	var rebinds int
	for _, m := range srv.Log() {
		if m.Type == dhcpv4.MessageTypeRequest && m.CIAddr.IsValid() && m.At.After(last.RebindAt()) {
			rebinds++
		}
	}
	if rebinds == 0 {
		t.Errorf("no REBINDING request after T2 %v", last.RebindAt())
	}
	waitFor(t, 2*time.Second, "address and route removed", func() bool {
		return !strings.Contains(ipCmd(t, "-n", w.c, "-4", "addr", "show", "dev", "c0"), last.Address.Addr().String())
	})
	w.checkGone(t, "c0", last.Address, 102)
	if l, _ := (&dhcp4.Store{Path: r.m.LeasePath()}).Load(); l != nil {
		t.Errorf("expired lease still stored: %+v", l)
	}

	// The server back: a fresh lease.
	srv.SetMode(dhcp4test.Serve)
	e = waitEvent(t, r.m, true, 10*time.Second)
	if e.Reason != "dhcp obtained" {
		t.Errorf("after the server came back: %+v", e)
	}
}

// A NAK at renewal is reported at once.
func TestNAKIsReportedAtOnce(t *testing.T) {
	w := newWorld(t)
	srv := startServer4(t, w, 4*time.Second)
	r := w.start(t, shortDHCP(Options{Config: Config{DHCP: true}, Table: 103}))
	e := waitEvent(t, r.m, true, 10*time.Second)
	srv.SetMode(dhcp4test.NAK)
	e = waitEvent(t, r.m, false, 5*time.Second)
	if e.Reason != "dhcp lease nak" {
		t.Fatalf("down event %+v, want dhcp lease nak", e)
	}
	var nakAt time.Time
	for _, m := range srv.Log() {
		if m.Reply == dhcpv4.MessageTypeNak {
			nakAt = m.At
			break
		}
	}
	if nakAt.IsZero() {
		t.Fatal("server sent no NAK")
	}
	if d := e.At.Sub(nakAt); d > 200*time.Millisecond {
		t.Errorf("NAK reported %v after the server sent it", d)
	}
	w.checkGone(t, "c0", e.Lease.Address, 103)
}

func TestStaticAddress(t *testing.T) {
	w := newWorld(t)
	r := w.start(t, Options{Config: Config{Address: "10.77.0.9/24", Gateway: "10.77.0.1"}, Table: 104})
	e := waitEvent(t, r.m, true, 5*time.Second)
	if e.Reason != "static" {
		t.Errorf("event %+v", e)
	}
	w.checkKernel(t, "c0", netip.MustParsePrefix("10.77.0.9/24"), netip.MustParseAddr("10.77.0.1"), 104)
	if out := ipCmd(t, "-n", w.c, "-4", "addr", "show", "dev", "c0"); !strings.Contains(out, "valid_lft forever") {
		t.Errorf("static address not permanent:\n%s", out)
	}
	// Applying twice (a restart) changes nothing.
	before := ipCmd(t, "-n", w.c, "-4", "route", "show", "table", "all")
	r.stop()
	r2 := w.start(t, Options{Config: Config{Address: "10.77.0.9/24", Gateway: "10.77.0.1"}, Table: 104})
	waitEvent(t, r2.m, true, 5*time.Second)
	if after := ipCmd(t, "-n", w.c, "-4", "route", "show", "table", "all"); after != before {
		t.Errorf("second apply changed routes:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func vlanSupported(t *testing.T, w *world) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", w.s, "link", "add", "link", "s0", "name", "s0.7", "type", "vlan", "id", "7").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Unknown device type") || strings.Contains(string(out), "not supported") {
			return false
		}
		t.Fatalf("ip link add vlan: %v\n%s", err, out)
	}
	return true
}

// DHCP over an 802.1Q VLAN, as fiber ISPs that tag their traffic need.
func TestVLAN(t *testing.T) {
	w := newWorld(t)
	if !vlanSupported(t, w) {
		t.Skip("kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q not set on this host); runs in the VM stage")
	}
	ipCmd(t, "-n", w.s, "addr", "add", "10.78.0.1/24", "dev", "s0.7")
	ipCmd(t, "-n", w.s, "link", "set", "s0.7", "up")
	srv, err := dhcp4test.Start(dhcp4test.Options{
		NetNS: w.sns, Iface: "s0.7", ServerIP: netip.MustParseAddr("10.78.0.1"), Prefix: 24,
		Pool: netip.MustParseAddr("10.78.0.100"), Router: netip.MustParseAddr("10.78.0.1"), Lease: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r := w.start(t, shortDHCP(Options{Config: Config{DHCP: true, VLAN: 7}, Table: 105}))
	e := waitEvent(t, r.m, true, 10*time.Second)
	w.checkKernel(t, "c0.7", e.Lease.Address, netip.MustParseAddr("10.78.0.1"), 105)
	if out := ipCmd(t, "-n", w.c, "-d", "link", "show", "c0.7"); !strings.Contains(out, "vlan protocol 802.1Q id 7") {
		t.Errorf("c0.7 is not vlan 7:\n%s", out)
	}
	// A restart adopts the VLAN link.
	r.stop()
	r2 := w.start(t, shortDHCP(Options{Config: Config{DHCP: true, VLAN: 7}, Table: 105}))
	waitEvent(t, r2.m, true, 10*time.Second)
	if n := strings.Count(ipCmd(t, "-n", w.c, "link", "show"), "c0.7@c0"); n != 1 {
		t.Errorf("%d c0.7 links after restart", n)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
