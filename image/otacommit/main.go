// Command otacommit decides on the device whether a freshly updated build
// stays: it commits the new root only once the supervisor reports healthy,
// and otherwise switches back to the previous root and reboots (rollback).
//
// It exists because the one who can judge the new build is on the device:
// lifeline's /healthz listens on loopback only (never on an uplink), so the
// host running `make update` cannot reach it. The decision is printed on the
// serial console (lifeline-ota: ...).
//
// It runs as a gokrazy service; when there is nothing to decide it exits
// 125, which tells gokrazy not to restart it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	healthz := flag.String("healthz", "http://127.0.0.1:9120/healthz", "lifeline's health endpoint (loopback)")
	gokrazy := flag.String("gokrazy", "http://127.0.0.1:80", "gokrazy's local HTTP API")
	deadline := flag.Duration("deadline", 2*time.Minute, "how long the new build has to become healthy")
	state := flag.String("state", "/perm/lifeline-ota/committed-root", "records the root= of the last healthy build")
	flag.Parse()

	console := openConsole()
	logf := func(format string, args ...any) {
		fmt.Fprintf(console, "lifeline-ota: "+format+"\n", args...)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logf("%v", err)
		os.Exit(125)
	}
	mode, why, err := bootMode("/proc/self/mountinfo", string(cmdline), *state)
	if err != nil {
		logf("cannot tell whether this boot is on trial: %v", err)
		os.Exit(125)
	}
	api := &gokrazyAPI{base: *gokrazy, password: readPassword()}
	d := decider{
		health:   func(ctx context.Context) error { return checkHealth(ctx, *healthz) },
		logf:     logf,
		interval: time.Second,
	}
	switch mode {
	case committed:
		os.Exit(125) // the running root is the committed one: nothing to decide
	case firstBoot:
		// A freshly flashed device has nothing to roll back to.
		if err := recordRoot(*state, rootArg(string(cmdline))); err != nil {
			logf("recording the first root: %v", err)
		}
		os.Exit(125)
	case gokrazyTestBoot:
		// gokrazy's own test boot: / is the new root, the boot config still
		// names the old one. Committing switches the boot config over.
		d.commit = func(ctx context.Context) error { return api.post(ctx, "/update/switch") }
		d.rollback = func(ctx context.Context) error { return api.post(ctx, "/reboot") }
	case trial:
		// gok update switched the boot config to the new root already:
		// committing records it, rolling back switches back to the other
		// (previous) root and reboots.
		root := rootArg(string(cmdline))
		d.commit = func(ctx context.Context) error { return recordRoot(*state, root) }
		d.rollback = func(ctx context.Context) error {
			if err := api.post(ctx, "/update/switch"); err != nil {
				return err
			}
			return api.post(ctx, "/reboot")
		}
	}
	logf("new build on trial (%s): waiting up to %v for %s", why, *deadline, *healthz)
	ctx, cancel := context.WithTimeout(context.Background(), *deadline)
	defer cancel()
	if err := d.run(ctx); err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	os.Exit(125)
}

type mode int

const (
	committed mode = iota
	firstBoot
	trial
	gokrazyTestBoot
)

// bootMode decides whether the running build still has to prove itself.
//
// gokrazy's `gok update --testboot` relies on a newline in cmdline.txt that
// the pinned gok does not write, so its test boot never happens; `make
// update` therefore uses a plain update (the boot config switches to the new
// root) and this program keeps the trial state itself: the root= of the
// last healthy build is recorded under /perm, and a boot from any other root
// is on trial. A real gokrazy test boot (/ mounted from the other partition)
// is recognised too, for when gokrazy fixes it.
func bootMode(mountinfo, cmdline, state string) (mode, string, error) {
	tb, why, err := isTestBoot(mountinfo)
	if err != nil {
		return committed, "", err
	}
	if tb {
		return gokrazyTestBoot, why, nil
	}
	root := rootArg(cmdline)
	if root == "" {
		return committed, "", errors.New("no root= on the kernel command line")
	}
	b, err := os.ReadFile(state)
	if os.IsNotExist(err) {
		return firstBoot, "", nil
	}
	if err != nil {
		return committed, "", err
	}
	if strings.TrimSpace(string(b)) == root {
		return committed, "", nil
	}
	return trial, fmt.Sprintf("booted %s, last healthy %s", root, strings.TrimSpace(string(b))), nil
}

func rootArg(cmdline string) string {
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "root=") {
			return f
		}
	}
	return ""
}

// recordRoot atomically replaces the state file.
func recordRoot(state, root string) error {
	if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
		return err
	}
	tmp := state + ".tmp"
	if err := os.WriteFile(tmp, []byte(root+"\n"), 0o644); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		f.Sync()
		f.Close()
	}
	return os.Rename(tmp, state)
}

// decider holds the commit-or-roll-back logic behind small functions so that
// it can be tested without a device.
type decider struct {
	health, commit, rollback func(context.Context) error
	logf                     func(string, ...any)
	interval                 time.Duration
}

// run polls health until it succeeds (commit) or ctx expires (rollback).
func (d *decider) run(ctx context.Context) error {
	var last error
	for {
		if last = d.health(ctx); last == nil {
			// A fresh context: the health deadline must not cut the commit.
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := d.commit(cctx); err != nil {
				return fmt.Errorf("healthy, but committing failed (the next reboot returns to the old root): %w", err)
			}
			d.logf("healthy: committed the new build")
			return nil
		}
		select {
		case <-ctx.Done():
			d.logf("not healthy in time (%v): rolling back to the previous root", last)
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := d.rollback(rctx); err != nil {
				return fmt.Errorf("rollback reboot: %w", err)
			}
			return nil
		case <-time.After(d.interval):
		}
	}
}

// isTestBoot reports whether / is the squashfs gokrazy's init mounted from
// the inactive partition during a test boot. After a normal boot the kernel
// mounted the root and mountinfo names it /dev/root; during a test boot init
// moved a mount of the other partition (e.g. /dev/vda3) onto /. The last
// squashfs mounted on / is the one on top, the one we run from.
func isTestBoot(mountinfo string) (bool, string, error) {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return false, "", err
	}
	source := ""
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options... - fstype source superopts
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 || f[4] != "/" {
			continue
		}
		g := strings.Fields(post)
		if len(g) < 2 {
			return false, "", fmt.Errorf("%s: malformed line %q", mountinfo, line)
		}
		if g[0] == "squashfs" {
			source = g[1]
		}
	}
	switch source {
	case "":
		return false, "", errors.New(mountinfo + ": no squashfs mounted on /")
	case "/dev/root":
		return false, "", nil
	}
	return true, "root is " + source, nil
}

func checkHealth(ctx context.Context, url string) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

type gokrazyAPI struct {
	base, password string
}

func (g *gokrazyAPI) post(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", g.base+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth("gokrazy", g.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

func readPassword() string {
	for _, p := range []string{"/etc/gokr-pw.txt", "/perm/gokr-pw.txt"} {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// openConsole returns the serial console, where a person debugging an update
// looks; stderr (gokrazy's log buffer) when it cannot be opened.
func openConsole() io.Writer {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		return os.Stderr
	}
	return io.MultiWriter(f, os.Stderr)
}
