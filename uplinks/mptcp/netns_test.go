package mptcp

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// Helpers for the integration tests: each test builds its own network
// namespaces, runs the client inside them, and compares with iproute2.

var ipBin = "/usr/sbin/ip"

func requireNetNS(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces")
	}
	if _, err := os.Stat(ipBin); err != nil {
		p, lerr := exec.LookPath("ip")
		if lerr != nil {
			t.Skipf("iproute2 `ip` not installed (%v)", err)
		}
		ipBin = p
	}
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		t.Skipf("kernel without MPTCP: %v", err)
	}
}

var nsSeq atomic.Int32

// newNetNS creates a named namespace (so `ip netns exec` finds it) whose
// name includes the pid, and deletes it when the test ends, failed or not.
func newNetNS(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("llmptcp-%d-%d", os.Getpid(), nsSeq.Add(1))
	_ = exec.Command(ipBin, "netns", "del", name).Run() // leftover of a killed run with a recycled pid
	if out, err := exec.Command(ipBin, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ipBin, "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ip(t, name, "link", "set", "lo", "up")
	return name
}

// inNetNS runs fn on a thread switched into namespace name. Sockets created
// by fn stay in that namespace.
func inNetNS(t testing.TB, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Get: %v", err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.GetFromName(%q): %v", name, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Set(%q): %v", name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime kills it when the
			// goroutine exits instead of reusing a thread in the wrong
			// namespace.
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

func dialIn(t testing.TB, name string) *Client {
	t.Helper()
	var c *Client
	var err error
	inNetNS(t, name, func() { c, err = Dial() })
	if err != nil {
		t.Fatalf("Dial in %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ip runs `ip netns exec NS ip ARGS...` and returns its stdout.
func ip(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := ipErr(ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ipErr(ns string, args ...string) (string, error) {
	cmd := exec.Command(ipBin, append([]string{"netns", "exec", ns, ipBin}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ip netns exec %s ip %s: %v: %s", ns, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// ifIndex resolves a device name in ns with `ip -o link show`.
func ifIndex(t testing.TB, ns, dev string) int {
	t.Helper()
	out := ip(t, ns, "-o", "link", "show", "dev", dev)
	i, err := strconv.Atoi(strings.SplitN(out, ":", 2)[0])
	if err != nil {
		t.Fatalf("ip -o link show dev %s: cannot parse %q", dev, out)
	}
	return i
}

// ipEndpoints parses `ip mptcp endpoint show`, e.g.
//
//	10.0.0.1 id 1 subflow backup dev d0
//	10.0.0.2 port 4000 id 7 signal
func ipEndpoints(t testing.TB, ns string) []Endpoint {
	t.Helper()
	out := ip(t, ns, "mptcp", "endpoint", "show")
	var eps []Endpoint
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			t.Fatalf("ip mptcp endpoint show: line %q: %v", line, err)
		}
		e := Endpoint{Addr: a}
		var flagWords []string
		for i := 1; i < len(f); i++ {
			switch f[i] {
			case "id", "port", "dev":
				if i+1 >= len(f) {
					t.Fatalf("ip mptcp endpoint show: line %q: %s without value", line, f[i])
				}
				v := f[i+1]
				switch f[i] {
				case "id":
					n, err := strconv.ParseUint(v, 10, 8)
					if err != nil {
						t.Fatalf("line %q: id: %v", line, err)
					}
					e.ID = uint8(n)
				case "port":
					n, err := strconv.ParseUint(v, 10, 16)
					if err != nil {
						t.Fatalf("line %q: port: %v", line, err)
					}
					e.Port = uint16(n)
				case "dev":
					e.IfIndex = ifIndex(t, ns, v)
				}
				i++
			default:
				flagWords = append(flagWords, f[i])
			}
		}
		fl, err := ParseFlags(strings.Join(flagWords, " "))
		if err != nil {
			t.Fatalf("ip mptcp endpoint show: line %q: %v", line, err)
		}
		e.Flags = fl
		eps = append(eps, e)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].ID < eps[j].ID })
	return eps
}

// ipLimits parses `ip mptcp limits show`: "add_addr_accepted 0 subflows 2".
func ipLimits(t testing.TB, ns string) Limits {
	t.Helper()
	out := ip(t, ns, "mptcp", "limits", "show")
	f := strings.Fields(out)
	var l Limits
	seen := 0
	for i := 0; i+1 < len(f); i += 2 {
		n, err := strconv.ParseUint(f[i+1], 10, 32)
		if err != nil {
			t.Fatalf("ip mptcp limits show: %q: %v", out, err)
		}
		switch f[i] {
		case "subflows":
			l.Subflows = uint32(n)
			seen++
		case "add_addr_accepted":
			l.AddAddrAccepted = uint32(n)
			seen++
		}
	}
	if seen != 2 {
		t.Fatalf("ip mptcp limits show: cannot parse %q", out)
	}
	return l
}

func fmtEndpoints(eps []Endpoint) string {
	var b strings.Builder
	for _, e := range eps {
		fmt.Fprintf(&b, "\n\t%v", e)
	}
	return b.String()
}

func sameEndpoints(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkAgainstIP fails unless the client's view, iproute2's view and want
// (ignoring IDs when want's ID is 0) agree.
func checkAgainstIP(t testing.TB, c *Client, ns string, want []Endpoint) []Endpoint {
	t.Helper()
	got, err := c.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	fromIP := ipEndpoints(t, ns)
	if !sameEndpoints(got, fromIP) {
		t.Fatalf("Endpoints() and `ip mptcp endpoint show` differ:\nclient:%s\nip:%s", fmtEndpoints(got), fmtEndpoints(fromIP))
	}
	if len(got) != len(want) {
		t.Fatalf("got %d endpoints, want %d:\ngot:%s\nwant:%s", len(got), len(want), fmtEndpoints(got), fmtEndpoints(want))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			x := g
			if w.ID == 0 {
				x.ID = 0
			}
			if x == w {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("endpoint %v missing:\ngot:%s", w, fmtEndpoints(got))
		}
	}
	return got
}
