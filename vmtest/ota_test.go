package vmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVMImageOTA is issue 5's OTA round trip against the qemu VM: update to a
// good build (committed after its health check, still the running build after
// a reboot), then to a deliberately unhealthy one (rolled back, the good build
// running and reachable again).
func TestVMImageOTA(t *testing.T) {
	img := testImage(t)
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	gok := os.Getenv("LIFELINE_GOK")
	if gok == "" {
		t.Skip("LIFELINE_GOK not set: the OTA test runs in make vmtest")
	}
	ctx, cancel := testContext(t, 14*time.Minute)
	defer cancel()

	profile, simBin := buildModemSim(t)
	sim, err := StartModemSim(ctx, simBin, profile, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	port := freePort(t)
	m, _, err := BootImageUntil(ctx, ImageOptions{Image: img, NICs: DefaultNICs(port), ModemPTY: sim.PTY},
		&testLogWriter{t: t, prefix: "serial: "}, readyLine)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	pw, err := os.ReadFile(filepath.Join(root, "build", "gokrazy", "http-password.txt"))
	if err != nil {
		t.Fatal(err)
	}
	dev := device{addr: fmt.Sprintf("127.0.0.1:%d", port), password: strings.TrimSpace(string(pw))}
	// The health judgement is otacommit's (it polls lifeline's loopback
	// /healthz); the test watches its verdict on the serial console and
	// the build gokrazy reports on the LAN port.
	before, err := dev.waitBuildTimestamp(ctx)
	if err != nil {
		t.Fatalf("gokrazy status before the update: %v", err)
	}

	// Good build: on trial after the update, committed once healthy.
	mark := m.Mark()
	good := gokUpdate(ctx, t, root, gok, dev.addr, "ota-good")
	if _, err := m.WaitForLineAfter(ctx, mark, "lifeline-ota: healthy: committed"); err != nil {
		t.Fatalf("good build not committed: %v", err)
	}
	mark = m.Mark()
	if err := dev.post(ctx, "/reboot"); err != nil {
		t.Logf("reboot request: %v (the connection may drop)", err)
	}
	if _, err := m.WaitForLineAfter(ctx, mark, "Run /gokrazy/init"); err != nil {
		t.Fatalf("reboot after commit: %v", err)
	}
	if ts, err := dev.waitBuildTimestamp(ctx); err != nil || ts != good || ts == before {
		t.Fatalf("after commit+reboot: build %q (%v), want the good build %q (was %q)", ts, err, good, before)
	}

	// Unhealthy build: on trial, not healthy in time, switched back.
	mark = m.Mark()
	bad := gokUpdate(ctx, t, root, gok, dev.addr, "ota-bad", "-unhealthy")
	if _, err := m.WaitForLineAfter(ctx, mark, "lifeline-ota: not healthy in time"); err != nil {
		t.Fatalf("bad build not rolled back: %v", err)
	}
	mark = m.Mark()
	if _, err := m.WaitForLineAfter(ctx, mark, "Run /gokrazy/init"); err != nil {
		t.Fatalf("reboot after rollback: %v", err)
	}
	if ts, err := dev.waitBuildTimestamp(ctx); err != nil || ts != good || ts == bad {
		t.Fatalf("after rollback: build %q (%v), want the good build %q (bad was %q)", ts, err, good, bad)
	}
}

// gokUpdate builds instance name (the test image plus extra mkinstance flags)
// and pushes it with gok update; it returns the new build
// timestamp the device reported.
func gokUpdate(ctx context.Context, t *testing.T, root, gok, addr, name string, flags ...string) string {
	t.Helper()
	args := append([]string{"run", "./image/mkinstance", "-test", "-name", name, "-hostname", "lifeline",
		"-version", name, "-ota-deadline", "60s", "-update", addr}, flags...)
	mk := exec.CommandContext(ctx, "go", args...)
	mk.Dir = root
	out, err := mk.Output()
	if err != nil {
		t.Fatalf("mkinstance %s: %v", name, err)
	}
	dir := strings.TrimSpace(string(out))
	up := exec.CommandContext(ctx, gok, "--parent_dir", filepath.Dir(dir), "-i", name, "update")
	up.Dir = dir
	up.Env = append(os.Environ(), "GOFLAGS=")
	log, err := up.CombinedOutput()
	if err != nil {
		t.Fatalf("gok update %s: %v\n%s", name, err, LastLines(string(log), 40))
	}
	// gok logs "Build timestamp: <ts>" for the build it pushed.
	for _, l := range strings.Split(string(log), "\n") {
		if _, ts, ok := strings.Cut(l, "Build timestamp: "); ok {
			return strings.TrimSpace(ts)
		}
	}
	t.Fatalf("gok update %s: no build timestamp in its output", name)
	return ""
}

type device struct{ addr, password string }

// deviceClient does not keep connections: the device reboots between
// requests, and a POST on a kept-alive connection to the previous boot
// (still open on QEMU's host side) fails with EOF instead of reconnecting.
var deviceClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func (d device) buildTimestamp(ctx context.Context) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, "GET", "http://"+d.addr+"/", nil)
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth("gokrazy", d.password)
	resp, err := deviceClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /: %s", resp.Status)
	}
	var st struct{ BuildTimestamp string }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return "", fmt.Errorf("GET /: %w", err)
	}
	return st.BuildTimestamp, nil
}

// waitBuildTimestamp polls until the device's HTTP API answers.
func (d device) waitBuildTimestamp(ctx context.Context) (string, error) {
	for {
		ts, err := d.buildTimestamp(ctx)
		if err == nil {
			return ts, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("device API: %w (last: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

func (d device) post(ctx context.Context, path string) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, "POST", "http://"+d.addr+path, nil)
	req.SetBasicAuth("gokrazy", d.password)
	resp, err := deviceClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return nil
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
