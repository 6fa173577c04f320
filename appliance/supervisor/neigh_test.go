package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestFlushUnresolved builds the state a cut leaves behind (the gateway's
// entry INCOMPLETE because packets kept asking for it while the link was
// dead) next to entries that must survive, and checks what the kernel
// holds after the kick.
func TestFlushUnresolved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs ip (make deps installs it): %v", err)
	}
	sh := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ns := fmt.Sprintf("llnb%x", os.Getpid()&0xffffff)
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "isp0")
	sh(t, "ip", "-n", ns, "addr", "add", "192.0.2.2/24", "dev", "up0")
	sh(t, "ip", "-n", ns, "link", "set", "up0", "up")
	// isp0 stays down: up0 has no carrier, as during a cut.
	sh(t, "ip", "-n", ns, "neigh", "replace", "192.0.2.9", "lladdr", "02:00:00:00:00:09", "nud", "permanent", "dev", "up0")
	sh(t, "ip", "-n", ns, "neigh", "replace", "192.0.2.8", "lladdr", "02:00:00:00:00:08", "nud", "stale", "dev", "up0")
	// A packet to the gateway makes the kernel start resolving it.
	sh(t, "ip", "netns", "exec", ns, "bash", "-c", "echo probe > /dev/udp/192.0.2.1/9")
	neigh := func() string { return sh(t, "ip", "-n", ns, "neigh", "show", "dev", "up0") }
	if n := neigh(); !regexp.MustCompile(`192\.0\.2\.1 +(INCOMPLETE|FAILED)`).MatchString(n) {
		t.Fatalf("setup: the gateway's entry is not waiting for resolution:\n%s", n)
	}

	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	l, err := nl.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := flushUnresolved(nl, l.Attrs().Index)
	if err != nil {
		t.Fatal(err)
	}
	got := neigh()
	if n != 1 || strings.Contains(got, "192.0.2.1 ") {
		t.Errorf("flushed %d entries, table now:\n%s\nwant only the gateway's unresolved entry gone", n, got)
	}
	for _, keep := range []string{"192.0.2.9 lladdr 02:00:00:00:00:09 PERMANENT", "192.0.2.8 lladdr 02:00:00:00:00:08 STALE"} {
		if !strings.Contains(got, keep) {
			t.Errorf("entry %q was removed:\n%s", keep, got)
		}
	}
	// Applying it again finds nothing to do.
	if n, err := flushUnresolved(nl, l.Attrs().Index); err != nil || n != 0 {
		t.Errorf("second flush: %d, %v; want 0, nil", n, err)
	}
}
