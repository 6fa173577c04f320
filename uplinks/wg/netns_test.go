package wg

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// twoSides builds namespaces A and B joined by one veth pair,
// 192.168.77.1/24 (A) and 192.168.77.2/24 (B), and a helper in each.
func twoSides(t *testing.T, modeA string) (nsA, nsB string, hA, hB *helper) {
	t.Helper()
	nsA, nsB = newNS(t, "a"), newNS(t, "b")
	run(t, "ip", "-n", nsA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", "192.168.77.1/24", "dev", "va")
	run(t, "ip", "-n", nsB, "addr", "add", "192.168.77.2/24", "dev", "vb")
	run(t, "ip", "-n", nsA, "link", "set", "va", "up")
	run(t, "ip", "-n", nsB, "link", "set", "vb", "up")
	return nsA, nsB, startHelper(t, nsA, modeA), startHelper(t, nsB, "userspace")
}

func keyPair(t testing.TB) (wgtypes.Key, wgtypes.Key) {
	t.Helper()
	priv, pub, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// reach returns a check that a TCP round trip from h to an echo server at
// addr succeeds; it is polled, since the first attempt starts the handshake.
func reach(h *helper, addr string) func() error {
	return func() error {
		if r := h.call(request{Op: "tcp", Addr: addr, Size: 1000}); r.Err != "" {
			return fmt.Errorf("TCP round trip to %s from %s: %s", addr, h.ns, r.Err)
		}
		return nil
	}
}

func TestTunnel(t *testing.T) {
	requireNetns(t)
	nsA, nsB, hA, hB := twoSides(t, "auto")
	nameA, nameB := ifName(t, "a"), ifName(t, "b")
	privA, pubA := keyPair(t)
	privB, pubB := keyPair(t)
	cfgA := Config{
		Name: nameA, PrivateKey: privA, ListenPort: 51820,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.200.0.1/24"), netip.MustParsePrefix("fd00:200::1/64")},
		Peers: []Peer{{
			PublicKey:  pubB,
			Endpoint:   &net.UDPAddr{IP: net.ParseIP("192.168.77.2"), Port: 51821},
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.200.0.2/32"), netip.MustParsePrefix("fd00:200::2/128")},
		}},
	}
	// B waits to be contacted, as the concentrator does.
	cfgB := Config{
		Name: nameB, PrivateKey: privB, ListenPort: 51821,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.200.0.2/24"), netip.MustParsePrefix("fd00:200::2/64")},
		Peers:     []Peer{{PublicKey: pubA, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.200.0.1/32"), netip.MustParsePrefix("fd00:200::1/128")}}},
	}
	hA.ensure(cfgA)
	hB.ensure(cfgB)

	wantMode := "userspace"
	if KernelHasWireGuard() {
		wantMode = "kernel"
	}
	if got := hA.must(request{Op: "mode", Name: nameA}).Mode; got != wantMode {
		t.Errorf("Mode(%s) in auto mode = %q, want %q", nameA, got, wantMode)
	}

	hB.must(request{Op: "echo", Addr: ":7777"})
	waitFor(t, 20*time.Second, "TCP to 10.200.0.2 through the tunnel", reach(hA, "10.200.0.2:7777"))
	waitFor(t, 20*time.Second, "TCP to fd00:200::2 through the tunnel", reach(hA, "[fd00:200::2]:7777"))
	// Several MB exercise wireguard-go's TUN offload (GSO/GRO) paths.
	hA.must(request{Op: "tcp", Addr: "10.200.0.2:7777", Size: 8 << 20})

	devA := hA.device(nameA)
	if len(devA.Peers) != 1 || devA.Peers[0].LastHandshakeTime.IsZero() {
		t.Fatalf("Device(%s) peers = %+v, want one peer with a handshake", nameA, devA.Peers)
	}
	if devA.Peers[0].ReceiveBytes == 0 || devA.Peers[0].TransmitBytes < 8<<20 {
		t.Errorf("Device(%s) counters rx %d tx %d, want rx > 0 and tx >= 8 MiB", nameA, devA.Peers[0].ReceiveBytes, devA.Peers[0].TransmitBytes)
	}
	checkWgShow(t, nsA, cfgA, devA)
	checkAddrs(t, nsA, nameA, cfgA.Addresses, DefaultMTU)

	t.Run("idempotent", func(t *testing.T) {
		before := mustShowLink(t, nsA, nameA)
		hsA := hA.device(nameA).Peers[0].LastHandshakeTime
		hsB := hB.device(nameB).Peers[0].LastHandshakeTime
		mon := startMonitor(t, nsA)
		mon.mark(markPrefix + "1")
		hA.ensure(cfgA)
		hB.ensure(cfgB)
		if ev := mon.mark(markPrefix + "2"); len(ev) != 0 {
			t.Errorf("second Ensure changed what netlink shows in %s:\n%s", nsA, strings.Join(ev, "\n"))
		}
		after := mustShowLink(t, nsA, nameA)
		if after.IfIndex != before.IfIndex {
			t.Errorf("ifindex of %s changed from %d to %d", nameA, before.IfIndex, after.IfIndex)
		}
		if got := hA.device(nameA).Peers[0].LastHandshakeTime; !got.Equal(hsA) {
			t.Errorf("handshake on %s changed from %v to %v", nameA, hsA, got)
		}
		if got := hB.device(nameB).Peers[0].LastHandshakeTime; !got.Equal(hsB) {
			t.Errorf("handshake on %s changed from %v to %v", nameB, hsB, got)
		}
	})

	t.Run("peer change in place", func(t *testing.T) {
		hs := hA.device(nameA).Peers[0].LastHandshakeTime
		cfg := cfgA
		cfg.Peers = slices.Clone(cfgA.Peers)
		cfg.Peers[0].Keepalive = 7 * time.Second
		hA.ensure(cfg)
		d := hA.device(nameA)
		if got := d.Peers[0].PersistentKeepaliveInterval; got != 7*time.Second {
			t.Errorf("keepalive = %v, want 7s", got)
		}
		// A changed peer is updated, not removed and re-added.
		if !d.Peers[0].LastHandshakeTime.Equal(hs) {
			t.Errorf("handshake reset by a keepalive change: %v -> %v", hs, d.Peers[0].LastHandshakeTime)
		}
		hA.ensure(cfgA)
		if got := hA.device(nameA).Peers[0].PersistentKeepaliveInterval; got != 0 {
			t.Errorf("keepalive after re-applying = %v, want 0", got)
		}
	})

	t.Run("repairs drift", func(t *testing.T) {
		run(t, "ip", "-n", nsA, "addr", "add", "10.201.0.1/24", "dev", nameA)
		run(t, "ip", "-n", nsA, "link", "set", nameA, "mtu", "1300")
		run(t, "ip", "-n", nsA, "link", "set", nameA, "down")
		// A stray peer added behind our back.
		_, stray := keyPair(t)
		hA.must(request{Op: "straypeer", Name: nameA, Key: &stray})
		hA.ensure(cfgA)
		checkAddrs(t, nsA, nameA, cfgA.Addresses, DefaultMTU)
		if l := mustShowLink(t, nsA, nameA); !slices.Contains(l.Flags, "UP") {
			t.Errorf("%s flags %v after Ensure, want UP", nameA, l.Flags)
		}
		if d := hA.device(nameA); len(d.Peers) != 1 || d.Peers[0].PublicKey != pubB {
			t.Errorf("peers after Ensure = %+v, want only %s", d.Peers, pubB)
		}
		waitFor(t, 20*time.Second, "TCP after the link came back up", reach(hA, "10.200.0.2:7777"))
	})

	t.Run("remove", func(t *testing.T) {
		hA.must(request{Op: "remove", Name: nameA})
		if _, err := showLink(nsA, nameA); err == nil {
			t.Errorf("%s still exists in %s after Remove", nameA, nsA)
		}
		if wantMode == "userspace" {
			if _, err := os.Stat(uapiPath(nameA)); !os.IsNotExist(err) {
				t.Errorf("UAPI socket %s after Remove: %v, want it gone", uapiPath(nameA), err)
			}
		}
		hA.must(request{Op: "remove", Name: nameA}) // absent is fine
		if got := hA.must(request{Op: "mode", Name: nameA}).Mode; got != "" {
			t.Errorf("Mode(%s) after Remove = %q, want empty", nameA, got)
		}
		hB.must(request{Op: "close"})
		if _, err := showLink(nsB, nameB); err == nil {
			t.Errorf("%s still exists in %s after Close", nameB, nsB)
		}
		if _, err := os.Stat(uapiPath(nameB)); !os.IsNotExist(err) {
			t.Errorf("UAPI socket %s after Close: %v, want it gone", uapiPath(nameB), err)
		}
	})
}

// checkWgShow compares `wg show NAME dump` with the config and with what
// wgctrl reported; without wg(8) the wgctrl view alone was checked.
func checkWgShow(t *testing.T, ns string, cfg Config, dev *wgtypes.Device) {
	t.Helper()
	if _, err := exec.LookPath("wg"); err != nil {
		t.Logf("wg(8) not installed (wireguard-tools): checked through wgctrl only")
		return
	}
	out := run(t, "ip", "netns", "exec", ns, "wg", "show", cfg.Name, "dump")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1+len(cfg.Peers) {
		t.Fatalf("wg show %s dump: %d lines, want %d:\n%s", cfg.Name, len(lines), 1+len(cfg.Peers), out)
	}
	f := strings.Split(lines[0], "\t")
	wantMark := "off"
	if cfg.FwMark != 0 {
		wantMark = fmt.Sprintf("0x%x", cfg.FwMark)
	}
	if want := []string{cfg.PrivateKey.String(), cfg.PrivateKey.PublicKey().String(), strconv.Itoa(cfg.ListenPort), wantMark}; !slices.Equal(f, want) {
		t.Errorf("wg show %s dump interface line = %q, want %q", cfg.Name, f, want)
	}
	for i, p := range cfg.Peers {
		f := strings.Split(lines[1+i], "\t")
		if len(f) != 8 {
			t.Fatalf("wg show dump peer line %q: %d fields", lines[1+i], len(f))
		}
		var allowed []string
		for _, a := range p.AllowedIPs {
			allowed = append(allowed, a.String())
		}
		slices.Sort(allowed)
		gotAllowed := strings.Split(f[3], ",")
		slices.Sort(gotAllowed)
		endpoint := "(none)"
		if p.Endpoint != nil {
			endpoint = p.Endpoint.String()
		}
		if f[0] != p.PublicKey.String() || f[2] != endpoint || !slices.Equal(gotAllowed, allowed) {
			t.Errorf("wg show peer line %q, want key %s endpoint %s allowed %s", lines[1+i], p.PublicKey, endpoint, strings.Join(allowed, ","))
		}
		if f[4] == "0" || f[4] != strconv.FormatInt(dev.Peers[i].LastHandshakeTime.Unix(), 10) {
			t.Errorf("wg show latest handshake %s, wgctrl says %v", f[4], dev.Peers[i].LastHandshakeTime)
		}
	}
}

// checkAddrs compares the interface's global addresses and MTU, as `ip`
// shows them, with want.
func checkAddrs(t *testing.T, ns, dev string, want []netip.Prefix, mtu int) {
	t.Helper()
	l := mustShowLink(t, ns, dev)
	var got []netip.Prefix
	for _, a := range l.AddrInfo {
		p := netip.PrefixFrom(netip.MustParseAddr(a.Local), a.PrefixLen)
		if a.Scope == "link" {
			continue
		}
		got = append(got, p)
	}
	cmp := func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(got, cmp)
	w := slices.Clone(want)
	slices.SortFunc(w, cmp)
	if !slices.Equal(got, w) {
		t.Errorf("addresses on %s per ip: %v, want %v", dev, got, w)
	}
	if l.MTU != mtu {
		t.Errorf("MTU of %s per ip: %d, want %d", dev, l.MTU, mtu)
	}
}

// monitor runs `ip monitor` in a namespace; mark brackets a span of events
// with a link nobody else touches, so no sleep decides when it started.
type monitor struct {
	t     *testing.T
	ns    string
	lines chan string
}

func startMonitor(t *testing.T, ns string) *monitor {
	t.Helper()
	cmd := exec.Command("ip", "-n", ns, "monitor", "link", "address", "route", "rule")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("ip monitor: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	m := &monitor{t: t, ns: ns, lines: make(chan string, 1024)}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			m.lines <- s.Text()
		}
		close(m.lines)
	}()
	return m
}

// markPrefix starts every marker's name.
const markPrefix = "lfmk"

// mark adds and deletes a veth pair called name (which must start with
// markPrefix) and returns the events
// seen before the first one about it, consuming everything up to its deletion.
// The first mark may catch the monitor before it listens, so it retries.
func (m *monitor) mark(name string) []string {
	m.t.Helper()
	var before []string
	seen := false
	deadline := time.After(10 * time.Second)
	for attempt := 0; ; attempt++ {
		// This kernel has no dummy links; a veth pair serves.
		run(m.t, "ip", "-n", m.ns, "link", "add", name, "type", "veth", "peer", "name", name+"p")
		run(m.t, "ip", "-n", m.ns, "link", "del", name)
		retry := time.After(time.Second)
	wait:
		for {
			select {
			case l, ok := <-m.lines:
				if !ok {
					m.t.Fatalf("ip monitor in %s exited", m.ns)
				}
				if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
					continue // continuation of the record before
				}
				if !strings.Contains(l, name) {
					if strings.Contains(l, markPrefix) {
						continue // an earlier marker's peer going away
					}
					if !seen {
						before = append(before, l)
					}
					continue
				}
				seen = true
				if strings.HasPrefix(l, "Deleted") {
					return before
				}
			case <-retry:
				if seen {
					continue
				}
				break wait
			case <-deadline:
				m.t.Fatalf("ip monitor in %s never showed %s", m.ns, name)
			}
		}
	}
}

// TestFwMark checks that FwMark really marks the tunnel's UDP: A reaches B's
// endpoint 192.0.2.2 over veth 1 in the main table and over veth 2 in table
// 100, selected by `ip rule fwmark 0x64`. B learns A's endpoint from where
// A's packets come from, so it tells which path they took.
func TestFwMark(t *testing.T) {
	requireNetns(t)
	nsA, nsB := newNS(t, "a"), newNS(t, "b")
	// No IPv6 chatter, so veth 1's transmit counter moves only for us.
	run(t, "ip", "netns", "exec", nsA, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	// A receives B's answers on veth 2 although its main table points at
	// veth 1: no reverse-path filter, whatever the host's defaults are.
	for _, ns := range []string{nsA, nsB} {
		run(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	}
	for i, n := range []string{"1", "2"} {
		run(t, "ip", "-n", nsA, "link", "add", "va"+n, "type", "veth", "peer", "name", "vb"+n, "netns", nsB)
		run(t, "ip", "-n", nsA, "addr", "add", fmt.Sprintf("10.%d.0.1/24", i+1), "dev", "va"+n)
		run(t, "ip", "-n", nsA, "link", "set", "va"+n, "up")
		run(t, "ip", "-n", nsB, "link", "set", "vb"+n, "up")
		run(t, "ip", "-n", nsB, "route", "add", fmt.Sprintf("10.%d.0.0/24", i+1), "dev", "vb"+n)
	}
	// B's only address is the endpoint, on lo: the kernel picks the reply
	// source from the receiving interface's addresses when it has any
	// (IP_PKTINFO's spec_dst), and A would then roam to that address.
	run(t, "ip", "-n", nsB, "addr", "add", "192.0.2.2/32", "dev", "lo")
	run(t, "ip", "-n", nsA, "route", "add", "192.0.2.2/32", "dev", "va1")
	run(t, "ip", "-n", nsA, "route", "add", "192.0.2.2/32", "dev", "va2", "table", "100")
	run(t, "ip", "-n", nsA, "rule", "add", "fwmark", "0x64", "lookup", "100", "priority", "100")

	hA, hB := startHelper(t, nsA, "userspace"), startHelper(t, nsB, "userspace")
	nameA, nameB := ifName(t, "fa"), ifName(t, "fb")
	privA, pubA := keyPair(t)
	privB, pubB := keyPair(t)
	cfgA := Config{
		Name: nameA, PrivateKey: privA, ListenPort: 51830, FwMark: 0x64,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.210.0.1/24")},
		Peers: []Peer{{PublicKey: pubB, Endpoint: &net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 51831},
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.0.2/32")}}},
	}
	cfgB := Config{
		Name: nameB, PrivateKey: privB, ListenPort: 51831,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.210.0.2/24")},
		Peers:     []Peer{{PublicKey: pubA, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.0.1/32")}}},
	}
	hB.ensure(cfgB)
	tx1 := mustShowLink(t, nsA, "va1").Stats64.TX.Packets
	hA.ensure(cfgA)
	hB.must(request{Op: "echo", Addr: ":7777"})
	waitFor(t, 20*time.Second, "TCP through the marked tunnel", reach(hA, "10.210.0.2:7777"))
	checkWgShow(t, nsA, cfgA, hA.device(nameA))

	endpointOnB := func(want string) func() error {
		return func() error {
			d := hB.device(nameB)
			if len(d.Peers) != 1 || d.Peers[0].Endpoint == nil {
				return fmt.Errorf("B's peers: %+v", d.Peers)
			}
			if got := d.Peers[0].Endpoint.IP.String(); got != want {
				return fmt.Errorf("B sees A at %v, want %s", d.Peers[0].Endpoint, want)
			}
			return nil
		}
	}
	if err := endpointOnB("10.2.0.1")(); err != nil {
		t.Errorf("with fwmark 0x64 the tunnel did not leave through table 100: %v", err)
	}
	if tx2 := mustShowLink(t, nsA, "va1").Stats64.TX.Packets; tx2 != tx1 {
		t.Errorf("veth 1 (main table) sent %d packets while the tunnel was marked for table 100", tx2-tx1)
	}

	// The same device without the mark takes the main table: this shows the
	// check above can tell the paths apart, and that Ensure changes the
	// mark on a running device.
	cfgA.FwMark = 0
	hA.ensure(cfgA)
	if d := hA.device(nameA); d.FirewallMark != 0 {
		t.Errorf("fwmark after Ensure with 0 = %#x", d.FirewallMark)
	}
	waitFor(t, 10*time.Second, "B to see A's unmarked packets from 10.1.0.1", func() error {
		if err := reach(hA, "10.210.0.2:7777")(); err != nil {
			return err
		}
		return endpointOnB("10.1.0.1")()
	})
}

// TestUAPISocket covers the socket directory shared by all namespaces: a
// stale socket from a dead process is replaced, a live one is refused
// before any link is created; also a port clash, and a non-WireGuard link
// that must not be adopted.
func TestUAPISocket(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "u")
	h := startHelper(t, ns, "userspace")
	priv, _ := keyPair(t)
	if err := os.MkdirAll(uapiDir, 0o755); err != nil {
		t.Fatal(err)
	}

	stale := ifName(t, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: uapiPath(stale), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody listens: a dead wireguard-go's leftover
	h.ensure(Config{Name: stale, PrivateKey: priv, ListenPort: 51850})
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d, err := c.Device(stale); err != nil || d.PrivateKey != priv {
		t.Errorf("wgctrl on the socket that replaced a stale one: %v, %v", d, err)
	}

	live := ifName(t, "l")
	ll, err := net.ListenUnix("unix", &net.UnixAddr{Name: uapiPath(live), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	go func() {
		for {
			c, err := ll.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	r := h.call(request{Op: "ensure", Config: &Config{Name: live, PrivateKey: priv}})
	if !strings.Contains(r.Err, uapiPath(live)) || !strings.Contains(r.Err, "unique") {
		t.Errorf("Ensure with a live foreign UAPI socket: error %q, want one naming %s and the uniqueness rule", r.Err, uapiPath(live))
	}
	if _, err := showLink(ns, live); err == nil {
		t.Errorf("a link %s was created although its UAPI socket was taken", live)
	}

	// A port already taken in the namespace fails the Ensure and leaves no
	// half-configured interface behind.
	clash := ifName(t, "p")
	r = h.call(request{Op: "ensure", Config: &Config{Name: clash, PrivateKey: priv, ListenPort: 51850}})
	if !strings.Contains(r.Err, clash) || !strings.Contains(r.Err, "51850") || !strings.Contains(r.Err, "address already in use") {
		t.Errorf("Ensure on a taken port: error %q, want one naming %s, the port and EADDRINUSE", r.Err, clash)
	}
	if _, err := showLink(ns, clash); err == nil {
		t.Errorf("%s left behind after its Ensure failed", clash)
	}
	if _, err := os.Stat(uapiPath(clash)); !os.IsNotExist(err) {
		t.Errorf("UAPI socket of %s after its Ensure failed: %v, want it gone", clash, err)
	}

	other := ifName(t, "v")
	run(t, "ip", "-n", ns, "link", "add", other, "type", "veth", "peer", "name", other+"p")
	r = h.call(request{Op: "ensure", Config: &Config{Name: other, PrivateKey: priv}})
	if !strings.Contains(r.Err, other) || !strings.Contains(r.Err, `"veth"`) {
		t.Errorf("Ensure over a veth link: error %q, want one naming %s and its type", r.Err, other)
	}
	if r := h.call(request{Op: "remove", Name: other}); !strings.Contains(r.Err, `"veth"`) {
		t.Errorf("Remove of a veth link: error %q, want a refusal naming its type", r.Err)
	}
	mustShowLink(t, ns, other)
}

// TestKernelProbeMatchesIP cross-checks KernelHasWireGuard against `ip link
// add type wireguard` in a throwaway namespace.
func TestKernelProbeMatchesIP(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "k")
	out, err := exec.Command("ip", "-n", ns, "link", "add", "wgprobe", "type", "wireguard").CombinedOutput()
	if has := KernelHasWireGuard(); has != (err == nil) {
		t.Errorf("KernelHasWireGuard() = %v, but ip link add type wireguard: %v %s", has, err, out)
	}
}

// TestKernelModeWithoutWireGuard needs a kernel without WireGuard, like the
// development host's.
func TestKernelModeWithoutWireGuard(t *testing.T) {
	if KernelHasWireGuard() {
		t.Skip("this kernel has WireGuard; the error path needs one without")
	}
	priv, _ := keyPair(t)
	name := fmt.Sprintf("lwk%d", os.Getpid())
	m := NewManager(nil, ModeKernel)
	defer m.Close()
	err := m.Ensure(Config{Name: name, PrivateKey: priv})
	if err == nil {
		m.Remove(name)
		t.Fatal("Ensure in ModeKernel succeeded on a kernel without WireGuard")
	}
	if !strings.Contains(err.Error(), `module "wireguard"`) || !strings.Contains(err.Error(), name) {
		t.Errorf("error %q, want one naming the interface and the wireguard module", err)
	}
	if m.Mode(name) != "" {
		t.Errorf("Mode(%s) = %q after a failed Ensure", name, m.Mode(name))
	}
}

// BenchmarkDevice measures reading a userspace device's state (peers,
// handshake, counters) through wgctrl and its UAPI socket: the failover
// reactor reads receive counters every few milliseconds.
func BenchmarkDevice(b *testing.B) {
	requireNetns(b)
	ns := newNS(b, "bench")
	h := startHelper(b, ns, "userspace")
	name := ifName(b, "bn")
	priv, _ := keyPair(b)
	peers := make([]Peer, 2)
	for i := range peers {
		_, pub := keyPair(b)
		peers[i] = Peer{PublicKey: pub, Endpoint: &net.UDPAddr{IP: net.IPv4(192, 0, 2, byte(i+1)), Port: 51820},
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i), 0}), 24)}}
	}
	h.ensure(Config{Name: name, PrivateKey: priv, Peers: peers})
	r := h.must(request{Op: "benchdevice", Name: name, Size: b.N})
	d, err := time.ParseDuration(r.Mode)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "ns/Device")
}
