package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// run runs a host command and returns its stdout; the error carries the
// command line and its stderr, because "exit status 2" alone does not say
// which of fifty `ip` calls failed.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// inNetns runs fn on an OS thread switched into the named network
// namespace. Sockets created inside fn stay in that namespace for their whole
// life, whichever thread uses them later. fn runs on its own goroutine so
// that, should switching back fail, the tainted thread dies with it (Go
// terminates a thread whose goroutine exits while locked) instead of
// carrying the wrong namespace into unrelated code.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns.Get: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns.GetFromName(%s): %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns.Set(%s): %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread exits with this goroutine.
			errc <- fmt.Errorf("netns.Set(back from %s): %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// dialIn opens a TCP connection from inside namespace ns.
func dialIn(ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// readNetstat reads the namespace's /proc/net/netstat and /proc/net/snmp
// counters ("MPTcpExt.DuplicateData": 12) without forking nstat.
func readNetstat(ns string) (map[string]int64, error) {
	m := map[string]int64{}
	err := inNetns(ns, func() error {
		for _, f := range []string{"/proc/thread-self/net/netstat", "/proc/thread-self/net/snmp"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			lines := strings.Split(string(b), "\n")
			for i := 0; i+1 < len(lines); i += 2 {
				h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
				if len(h) != len(v) || len(h) < 2 {
					continue
				}
				pfx := strings.TrimSuffix(h[0], ":")
				for j := 1; j < len(h); j++ {
					var n int64
					fmt.Sscan(v[j], &n)
					m[pfx+"."+h[j]] = n
				}
			}
		}
		return nil
	})
	return m, err
}
