package supervisor_test

// These tests run the real binaries in real network namespaces: a router
// with two uplinks (fiber0, wwan0) joined by veth to a concentrator. They
// check the kernel state with `ip`, the way an operator would.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/uplinks/dhcp4/dhcp4test"
	"github.com/lifeline-router/lifeline/uplinks/ethernet"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // the tests skip with a message
		}
		d, err := os.MkdirTemp("", "lifeline-sup-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(d)
		out, err := exec.Command("go", "build", "-o", d+"/", "github.com/lifeline-router/lifeline/cmd/lifeline").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "go build cmd/lifeline: %v\n%s", err, out)
			return 1
		}
		binDir = d
		return m.Run()
	}()
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make deps installs it): %v", tool, err)
		}
	}
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type world struct {
	t         *testing.T
	id        string
	r, c      string // namespace names
	dir       string
	cfgPath   string
	events    string
	fiberWG   string
	lteWG     string
	procs     []*proc
	cfg       config.Config
	cFiberDev string
}

type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	ready chan struct{}
	done  chan struct{}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

func newWorld(t *testing.T) *world {
	requireRoot(t)
	id := fmt.Sprintf("%x", os.Getpid()&0xffff) + fmt.Sprintf("%02x", time.Now().UnixNano()&0xff)
	w := &world{t: t, id: id, r: "llsr" + id, c: "llsc" + id, dir: t.TempDir()}
	w.fiberWG, w.lteWG = "wgf"+id, "wgl"+id
	w.cFiberDev = "cf" + id
	t.Cleanup(w.teardown)
	sh(t, "ip", "netns", "add", w.r)
	sh(t, "ip", "netns", "add", w.c)
	for _, l := range []struct{ dev, peer, net string }{{"fiber0", w.cFiberDev, "1"}, {"wwan0", "cl" + id, "3"}} {
		sh(t, "ip", "-n", w.r, "link", "add", l.dev, "type", "veth", "peer", "name", l.peer, "netns", w.c)
		sh(t, "ip", "-n", w.r, "addr", "add", "100.64."+l.net+".2/24", "dev", l.dev)
		sh(t, "ip", "-n", w.c, "addr", "add", "100.64."+l.net+".1/24", "dev", l.peer)
		sh(t, "ip", "-n", w.r, "link", "set", l.dev, "up")
		sh(t, "ip", "-n", w.c, "link", "set", l.peer, "up")
	}
	sh(t, "ip", "-n", w.r, "link", "set", "lo", "up")
	sh(t, "ip", "-n", w.c, "link", "set", "lo", "up")

	key := func(name string) (string, string) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(w.dir, name+".key")
		if err := os.WriteFile(p, []byte(k.String()+"\n"), 0600); err != nil {
			t.Fatal(err)
		}
		return p, k.PublicKey().String()
	}
	cPriv, cPub := key("conc")
	fPriv, fPub := key("fiber")
	lPriv, lPub := key("lte")
	w.cfg = config.Config{
		StateDir:      w.dir,
		MetricsListen: "127.0.0.1:9120",
		Concentrator: config.Concentrator{
			Endpoint: "100.64.1.1", PublicKey: cPub, PrivateKeyFile: cPriv,
			ServiceAddress: "10.55.0.1", ProbePort: 7,
		},
		Failover: config.Failover{HoldDown: config.Duration(500 * time.Millisecond), MaxSndbuf: 384 << 10},
		Uplinks: []config.Uplink{
			{Name: "fiber", Device: "fiber0", Role: config.RolePrimary, Priority: 300, Gateway: "100.64.1.1",
				WireGuard: config.WireGuard{Interface: w.fiberWG, ConcentratorInterface: "c" + w.fiberWG, PrivateKeyFile: fPriv, PublicKey: fPub,
					Port: 51820, Endpoint: "100.64.1.1:51820", Address: "10.55.1.2/24", PeerAddress: "10.55.1.1"}},
			{Name: "lte", Device: "wwan0", Role: config.RoleBackup, Priority: 100, Gateway: "100.64.3.1",
				WireGuard: config.WireGuard{Interface: w.lteWG, ConcentratorInterface: "c" + w.lteWG, PrivateKeyFile: lPriv, PublicKey: lPub,
					Port: 51822, Endpoint: "100.64.3.1:51822", Address: "10.55.3.2/24", PeerAddress: "10.55.3.1"}},
		},
	}
	w.writeConfig()
	w.events = filepath.Join(w.dir, "events.jsonl")
	return w
}

func (w *world) writeConfig() {
	b, err := json.MarshalIndent(w.cfg, "", "  ")
	if err != nil {
		w.t.Fatal(err)
	}
	w.cfgPath = filepath.Join(w.dir, "config.json")
	if err := os.WriteFile(w.cfgPath, b, 0644); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) start(ns string, args ...string) *proc {
	w.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, filepath.Join(binDir, "lifeline")}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	p := &proc{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "lifeline: ready") {
				once.Do(func() { close(p.ready) })
			}
		}
	}()
	w.procs = append(w.procs, p)
	select {
	case <-p.ready:
	case <-p.done:
		w.t.Fatalf("lifeline %s exited before ready:\n%s", strings.Join(args, " "), p.output())
	case <-time.After(20 * time.Second):
		w.t.Fatalf("lifeline %s not ready after 20s:\n%s", strings.Join(args, " "), p.output())
	}
	return p
}

func (w *world) stop(p *proc) {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (w *world) teardown() {
	for _, p := range w.procs {
		if p.cmd.ProcessState == nil {
			w.stop(p)
		}
	}
	if w.t.Failed() {
		for i, p := range w.procs {
			w.t.Logf("process %d output:\n%s", i, p.output())
		}
	}
	exec.Command("ip", "netns", "del", w.r).Run()
	exec.Command("ip", "netns", "del", w.c).Run()
	for _, n := range []string{w.fiberWG, w.lteWG, "c" + w.fiberWG, "c" + w.lteWG} {
		os.Remove("/var/run/wireguard/" + n + ".sock")
	}
}

func (w *world) ip(ns string, args ...string) string {
	return sh(w.t, append([]string{"ip", "-n", ns}, args...)...)
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var ifindexRE = regexp.MustCompile(`(?m)^\d+: `)

// state is what must not change when the config is applied again.
func (w *world) state() string {
	rules := w.ip(w.r, "rule", "show")
	routes := w.ip(w.r, "route", "show", "table", "all")
	eps := w.ip(w.r, "mptcp", "endpoint", "show")
	lim := w.ip(w.r, "mptcp", "limits", "show")
	// Route lines for local/broadcast addresses are kernel-made and stable;
	// keep everything, the point is to catch duplicates.
	return "rules:\n" + rules + "routes:\n" + routes + "endpoints:\n" + eps + "limits:\n" + lim
}

func (w *world) endpointsSettled() bool {
	eps := w.ip(w.r, "mptcp", "endpoint", "show")
	return regexp.MustCompile(`10\.55\.1\.2 id \d+ subflow dev `+w.fiberWG).MatchString(eps) &&
		regexp.MustCompile(`10\.55\.3\.2 id \d+ subflow backup dev `+w.lteWG).MatchString(eps)
}

func TestApplyAndAdopt(t *testing.T) {
	w := newWorld(t)
	w.start(w.c, "concentrator", "--config", w.cfgPath, "--wireguard", "userspace", "--nft", "-")
	sup := w.start(w.r, "run", "--config", w.cfgPath, "--events", w.events, "--wireguard", "userspace")
	waitFor(t, "both MPTCP endpoints (fiber subflow, lte subflow backup)", 10*time.Second, w.endpointsSettled)

	rules := w.ip(w.r, "rule", "show")
	for _, want := range []string{"fwmark 0x4c01 lookup 101", "fwmark 0x4c02 lookup 102", "from 10.55.1.2 lookup 201", "from 10.55.3.2 lookup 202"} {
		if !strings.Contains(rules, want) {
			t.Errorf("ip rule lacks %q:\n%s", want, rules)
		}
	}
	if r := w.ip(w.r, "route", "show", "table", "201"); !strings.Contains(r, "default dev "+w.fiberWG) || !strings.Contains(r, "rto_min lock 10ms") {
		t.Errorf("table 201 = %q, want default dev %s with rto_min lock 10ms", r, w.fiberWG)
	}
	if r := w.ip(w.r, "route", "show", "table", "201"); strings.Contains(r, "initcwnd") {
		t.Errorf("table 201 = %q: the primary's tunnel keeps the kernel's initial window", r)
	}
	// The backup's idle subflow starts a failover with its initial window.
	if r := w.ip(w.r, "route", "show", "table", "202"); !strings.Contains(r, "default dev "+w.lteWG) || !strings.Contains(r, "initcwnd 32") {
		t.Errorf("table 202 = %q, want default dev %s with initcwnd 32", r, w.lteWG)
	}
	if r := w.ip(w.r, "route", "show", "table", "101"); !strings.Contains(r, "default via 100.64.1.1 dev fiber0") || !strings.Contains(r, "unreachable default") {
		t.Errorf("table 101 = %q, want the uplink default and an unreachable last resort", r)
	}
	if r := w.ip(w.r, "route", "get", "10.55.0.1"); !strings.Contains(r, "dev "+w.fiberWG) || !strings.Contains(r, "src 10.55.1.2") {
		t.Errorf("service route = %q, want via the fiber tunnel", r)
	}
	// The concentrator's replies come from an address routed only in the
	// uplink's own table (by fwmark): the reverse-path check, which
	// carries no mark, must let them in. `ip route get ... iif` runs the
	// same input route lookup, source validation included.
	for _, dev := range []string{"fiber0", "wwan0"} {
		if v := strings.TrimSpace(sh(t, "ip", "netns", "exec", w.r, "cat", "/proc/sys/net/ipv4/conf/"+dev+"/rp_filter")); v != "0" {
			t.Errorf("%s rp_filter = %s, want 0", dev, v)
		}
	}
	// A backup subflow must not queue more than the send-buffer cap
	// (failover.max_sndbuf, 384 KiB here): the fail-back waits for it.
	if v := strings.Fields(sh(t, "ip", "netns", "exec", w.r, "cat", "/proc/sys/net/ipv4/tcp_wmem")); len(v) != 3 || v[2] != "393216" {
		t.Errorf("tcp_wmem = %q, want the maximum 393216", v)
	}
	// The primary's subflow joins again at every fail-back and must not
	// start with the kernel's 128 KiB receive buffer: twice the cap, at
	// least 512 KiB, with the kernel's 6 MiB maximum left for autotuning.
	if v := strings.Fields(sh(t, "ip", "netns", "exec", w.r, "cat", "/proc/sys/net/ipv4/tcp_rmem")); len(v) != 3 || v[1] != "786432" || v[2] != "6291456" {
		t.Errorf("tcp_rmem = %q, want 4096 786432 6291456", v)
	}
	if out, err := exec.Command("ip", "-n", w.r, "route", "get", "100.64.1.2", "from", "203.0.113.9", "iif", "fiber0").CombinedOutput(); err != nil {
		t.Errorf("an off-link concentrator's reply would be dropped on fiber0: ip route get ... iif fiber0: %v: %s", err, out)
	}
	if lim := w.ip(w.r, "mptcp", "limits", "show"); !strings.Contains(lim, "subflows 4") {
		t.Errorf("limits = %q", lim)
	}
	// The concentrator too: the kernel's default of 2 joined subflows rejected the backup's
	// re-join at a fail-back.
	if lim := w.ip(w.c, "mptcp", "limits", "show"); !strings.Contains(lim, "subflows 4") {
		t.Errorf("concentrator limits = %q, want subflows 4", lim)
	}
	// Nothing may open a TCP connection to the router through an uplink
	// (gokrazy's update API listens on every private address).
	fw := sh(t, "ip", "netns", "exec", w.r, "nft", "list", "table", "inet", "lifeline_router")
	for _, dev := range []string{"fiber0", "wwan0"} {
		if !regexp.MustCompile(`iifname "` + dev + `" tcp flags syn / syn,ack counter packets \d+ bytes \d+ drop`).MatchString(fw) {
			t.Errorf("firewall lacks the SYN drop on %s:\n%s", dev, fw)
		}
	}
	// Nothing listens on :80 here, so the attempt fails either way: what
	// counts is that the drop rule, not a RST, ended it.
	dialFrom(w.c, "100.64.1.2:80")
	if fw := sh(t, "ip", "netns", "exec", w.r, "nft", "list", "table", "inet", "lifeline_router"); !regexp.MustCompile(`iifname "fiber0" .* counter packets [1-9]`).MatchString(fw) {
		t.Errorf("the fiber SYN drop counted nothing after a connection attempt:\n%s", fw)
	}
	before := w.state()
	// A restarted supervisor adopts instead of duplicating.
	w.stop(sup)
	w.start(w.r, "run", "--config", w.cfgPath, "--events", w.events, "--wireguard", "userspace")
	waitFor(t, "endpoints after restart", 10*time.Second, w.endpointsSettled)
	after := w.state()
	norm := func(s string) string {
		// userspace tunnels are recreated on restart; their names are
		// stable, only link-local ids move.
		// IPv6 link-local addresses appear when DAD finishes, whenever.
		return regexp.MustCompile(`(?m)^.*fe80::.*\n`).ReplaceAllString(s, "")
	}
	if norm(before) != norm(after) {
		t.Errorf("state changed across a restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func readEvents(t *testing.T, path string) []map[string]string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var evs []map[string]string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e map[string]string
		if json.Unmarshal([]byte(l), &e) == nil {
			evs = append(evs, e)
		}
	}
	return evs
}

func hasEvent(evs []map[string]string, ev, uplink string, after time.Time) (time.Time, bool) {
	for _, e := range evs {
		ts, _ := time.Parse(time.RFC3339Nano, e["time"])
		if e["event"] == ev && e["uplink"] == uplink && !ts.Before(after) {
			return ts, true
		}
	}
	return time.Time{}, false
}

func TestCarrierCutAndBlackhole(t *testing.T) {
	w := newWorld(t)
	w.start(w.c, "concentrator", "--config", w.cfgPath, "--wireguard", "userspace", "--nft", "-")
	w.start(w.r, "run", "--config", w.cfgPath, "--events", w.events, "--wireguard", "userspace")
	waitFor(t, "endpoints", 10*time.Second, w.endpointsSettled)

	// Carrier cut on the far side of the fiber.
	cut := time.Now()
	w.ip(w.c, "link", "set", w.cFiberDev, "down")
	waitFor(t, "fiber endpoint removed after the cut", 5*time.Second, func() bool {
		return !strings.Contains(w.ip(w.r, "mptcp", "endpoint", "show"), "10.55.1.2")
	})
	evs := readEvents(t, w.events)
	down, ok := hasEvent(evs, "uplink_down", "fiber", cut)
	if !ok {
		t.Fatalf("no uplink_down event for fiber: %v", evs)
	}
	// The concentrator answered the DATA_ACK nudge through LTE (which
	// proves its SET_FLAGS on the flagless service endpoint works).
	if _, ok := hasEvent(evs, "nudge_answered", "fiber", cut); !ok {
		t.Errorf("no nudge_answered event after the cut: %v", evs)
	}
	// React to the link event, not to probes: within a few ms.
	if d := down.Sub(cut); d > 100*time.Millisecond {
		t.Errorf("carrier loss acted on after %v, want a few ms", d)
	}
	if r := w.ip(w.r, "route", "get", "10.55.0.1"); !strings.Contains(r, "dev "+w.lteWG) {
		t.Errorf("service route after cut = %q, want via LTE", r)
	}
	restore := time.Now()
	w.ip(w.c, "link", "set", w.cFiberDev, "up")
	waitFor(t, "fiber endpoint back after hold-down", 10*time.Second, w.endpointsSettled)
	if d := time.Since(restore); d < 500*time.Millisecond {
		t.Errorf("fiber back after %v, before the 500ms hold-down", d)
	}

	// Silent blackhole: link stays up, the concentrator drops the path.
	sh(t, "ip", "netns", "exec", w.c, "nft", "add table inet bh; add chain inet bh in { type filter hook input priority -10; }; add rule inet bh in udp dport 51820 drop")
	bh := time.Now()
	waitFor(t, "fiber endpoint removed after the blackhole", 5*time.Second, func() bool {
		return !strings.Contains(w.ip(w.r, "mptcp", "endpoint", "show"), "10.55.1.2")
	})
	evs = readEvents(t, w.events)
	down, ok = hasEvent(evs, "uplink_down", "fiber", bh)
	if !ok {
		t.Fatalf("no uplink_down event after blackhole: %v", evs)
	}
	for _, e := range evs {
		if e["event"] == "uplink_down" && e["uplink"] == "fiber" && e["reason"] != "carrier" && !strings.HasPrefix(e["reason"], "probe timeout") {
			t.Errorf("unexpected reason %q", e["reason"])
		}
	}
	if d := down.Sub(bh); d > 500*time.Millisecond {
		t.Errorf("blackhole detected after %v", d)
	}
	sh(t, "ip", "netns", "exec", w.c, "nft", "delete table inet bh")
	waitFor(t, "fiber endpoint back after the blackhole ends", 10*time.Second, w.endpointsSettled)
}

func TestBadConfigChangesNothing(t *testing.T) {
	w := newWorld(t)
	w.cfg.Uplinks[1].Device = "wwan9"
	w.writeConfig()
	out, err := exec.Command("ip", "netns", "exec", w.r, filepath.Join(binDir, "lifeline"), "run", "--config", w.cfgPath).CombinedOutput()
	if err == nil {
		t.Fatalf("supervisor accepted an unknown device:\n%s", out)
	}
	if !strings.Contains(string(out), "uplinks[1].device") {
		t.Errorf("error does not name uplinks[1].device:\n%s", out)
	}
	if r := w.ip(w.r, "rule", "show"); strings.Contains(r, "fwmark") {
		t.Errorf("a rejected config left rules behind:\n%s", r)
	}
	if l := w.ip(w.r, "link", "show"); strings.Contains(l, w.fiberWG) {
		t.Errorf("a rejected config left a tunnel behind:\n%s", l)
	}
	_ = context.Background
}

// TestDHCPLeaseLossFailsOver: the fiber is addressed by DHCP; losing the
// lease is an uplink failure the failover logic acts on at once.
func TestDHCPLeaseLossFailsOver(t *testing.T) {
	w := newWorld(t)
	w.ip(w.r, "addr", "flush", "dev", "fiber0")
	w.cfg.Uplinks[0].Gateway = ""
	w.cfg.Uplinks[0].Ethernet = &ethernet.Config{DHCP: true}
	w.writeConfig()
	nsh, err := netns.GetFromName(w.c)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	srv, err := dhcp4test.Start(dhcp4test.Options{NetNS: nsh, Iface: w.cFiberDev, ServerIP: netip.MustParseAddr("100.64.1.1"), Prefix: 24,
		Pool: netip.MustParseAddr("100.64.1.2"), Router: netip.MustParseAddr("100.64.1.1"),
		Lease: 4 * time.Second, T1: 2 * time.Second, T2: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	w.start(w.c, "concentrator", "--config", w.cfgPath, "--wireguard", "userspace", "--nft", "-")
	w.start(w.r, "run", "--config", w.cfgPath, "--events", w.events, "--wireguard", "userspace")
	waitFor(t, "endpoints once the lease is in", 15*time.Second, w.endpointsSettled)
	if r := w.ip(w.r, "route", "show", "table", "101"); !strings.Contains(r, "default via 100.64.1.1 dev fiber0") {
		t.Errorf("table 101 = %q, want the DHCP router as default", r)
	}
	if r := w.ip(w.r, "route", "show", "table", "main"); strings.Contains(r, "default") {
		t.Errorf("a DHCP default route leaked into the main table:\n%s", r)
	}
	srv.SetMode(dhcp4test.Silent)
	silent := time.Now()
	waitFor(t, "fiber endpoint removed after the lease expired", 10*time.Second, func() bool {
		return !strings.Contains(w.ip(w.r, "mptcp", "endpoint", "show"), "10.55.1.2")
	})
	// Lease 4 s from its last renewal (at most T1 = 2 s before silence).
	if d := time.Since(silent); d > 5*time.Second {
		t.Errorf("failed over %v after the server fell silent, want within the lease time", d)
	}
	evs := readEvents(t, w.events)
	if _, ok := hasEvent(evs, "uplink_down", "fiber", silent); !ok {
		t.Errorf("no uplink_down for fiber: %v", evs)
	}
	srv.SetMode(dhcp4test.Serve)
	waitFor(t, "fiber back with a fresh lease", 20*time.Second, w.endpointsSettled)
}

// dialFrom tries a TCP connection from namespace ns.
func dialFrom(ns, addr string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return err
	}
	defer netns.Set(orig)
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err
}
