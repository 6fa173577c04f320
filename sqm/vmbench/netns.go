package vmbench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// inNS runs fn on a thread switched to the named namespace. Sockets fn creates stay in that
// namespace after fn returns; that is how the load and the probes get their ends.
func inNS(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns.Get: %w", err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns.GetFromName(%s): %w", name, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns.Set(%s): %w", name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime then ends it with the goroutine instead of
		// reusing a thread in the wrong namespace.
		return fmt.Errorf("netns.Set(back from %s): %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Topology is the set of namespaces of one bench (see the package doc).
type Topology struct {
	RT, LTE, Core, Srv string
	// Addresses the probes and the load use.
	RouterIP, ServerIP string
}

// Device names.
const (
	Uplink    = "wwan0" // the router's LTE uplink
	modemDown = "lte-r" // modem → router: download capacity
	modemUp   = "lte-s" // modem → core: upload capacity
)

// NewTopology creates the namespaces, veths, addresses, routes and the base delay. Close
// deletes them.
func NewTopology(baseOWD string) (*Topology, error) {
	id := fmt.Sprintf("%d", os.Getpid())
	t := &Topology{RT: "vbrt" + id, LTE: "vblte" + id, Core: "vbcore" + id, Srv: "vbsrv" + id,
		RouterIP: "10.200.0.1", ServerIP: "10.200.2.2"}
	cmds := [][]string{
		{"ip", "netns", "add", t.RT}, {"ip", "netns", "add", t.LTE}, {"ip", "netns", "add", t.Core}, {"ip", "netns", "add", t.Srv},
		{"ip", "-n", t.RT, "link", "add", Uplink, "type", "veth", "peer", "name", modemDown, "netns", t.LTE},
		{"ip", "-n", t.LTE, "link", "add", modemUp, "type", "veth", "peer", "name", "core-m", "netns", t.Core},
		{"ip", "-n", t.Core, "link", "add", "core-s", "type", "veth", "peer", "name", "srv0", "netns", t.Srv},
		{"ip", "-n", t.RT, "addr", "add", "10.200.0.1/30", "dev", Uplink},
		{"ip", "-n", t.LTE, "addr", "add", "10.200.0.2/30", "dev", modemDown},
		{"ip", "-n", t.LTE, "addr", "add", "10.200.1.1/30", "dev", modemUp},
		{"ip", "-n", t.Core, "addr", "add", "10.200.1.2/30", "dev", "core-m"},
		{"ip", "-n", t.Core, "addr", "add", "10.200.2.1/30", "dev", "core-s"},
		{"ip", "-n", t.Srv, "addr", "add", "10.200.2.2/30", "dev", "srv0"},
	}
	for _, l := range []struct{ ns, dev string }{{t.RT, Uplink}, {t.RT, "lo"}, {t.LTE, modemDown}, {t.LTE, modemUp}, {t.LTE, "lo"},
		{t.Core, "core-m"}, {t.Core, "core-s"}, {t.Core, "lo"}, {t.Srv, "srv0"}, {t.Srv, "lo"}} {
		cmds = append(cmds, []string{"ip", "-n", l.ns, "link", "set", l.dev, "up"})
	}
	cmds = append(cmds,
		[]string{"ip", "-n", t.RT, "route", "add", "default", "via", "10.200.0.2"},
		[]string{"ip", "-n", t.LTE, "route", "add", "10.200.2.0/30", "via", "10.200.1.2"},
		[]string{"ip", "-n", t.Core, "route", "add", "10.200.0.0/30", "via", "10.200.1.1"},
		[]string{"ip", "-n", t.Srv, "route", "add", "default", "via", "10.200.2.1"},
		// The base delay of the mobile core, both ways; a limit far above anything queued.
		[]string{"tc", "-n", t.Core, "qdisc", "replace", "dev", "core-m", "root", "netem", "delay", baseOWD, "limit", "100000"},
		[]string{"tc", "-n", t.Core, "qdisc", "replace", "dev", "core-s", "root", "netem", "delay", baseOWD, "limit", "100000"},
	)
	for _, c := range cmds {
		if err := sh(c...); err != nil {
			t.Close()
			return nil, err
		}
	}
	for _, ns := range []string{t.LTE, t.Core} {
		if err := inNS(ns, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
		}); err != nil {
			t.Close()
			return nil, fmt.Errorf("ip_forward in %s: %w", ns, err)
		}
	}
	return t, nil
}

// Close deletes the namespaces (and with them every device and qdisc).
func (t *Topology) Close() error {
	var errs []string
	for _, ns := range []string{t.RT, t.LTE, t.Core, t.Srv} {
		if _, err := os.Stat("/run/netns/" + ns); err != nil {
			continue
		}
		if err := sh("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("vmbench: %s", strings.Join(errs, "; "))
	}
	return nil
}
