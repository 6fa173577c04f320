package lab

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/appliance/config"
)

// The lab's binaries: lifeline-lab (relays, send, recv run as separate
// processes in the namespaces) and the lead's bin/lifeline, built once.
var bins struct {
	dir, lab, lifeline  string
	labErr, lifelineErr error
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "lifeline-lab-test-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			bins.dir = dir
			bins.lab, bins.labErr = goBuild(dir, "lifeline-lab")
			if hasGoFiles("../cmd/lifeline") {
				bins.lifeline, bins.lifelineErr = goBuild(dir, "lifeline")
			} else {
				bins.lifelineErr = errors.New("cmd/lifeline does not exist yet")
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func goBuild(dir, name string) (string, error) {
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	return filepath.Join(dir, name), nil
}

func hasGoFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	return len(m) > 0
}

// needWorld skips when the lab cannot run here at all (not root, a tool
// missing) and fails when building the lab binary failed.
func needWorld(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "tc", "nft", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if bins.labErr != nil {
		t.Fatal(bins.labErr)
	}
}

// needLifeline is needWorld plus the lifeline binary, for the runs that start
// the supervisor and the concentrator; -short skips them (why: what they cost).
func needLifeline(t *testing.T, why string) {
	t.Helper()
	needWorld(t)
	if testing.Short() {
		t.Skip("-short: " + why)
	}
	if bins.lifelineErr != nil {
		if !hasGoFiles("../cmd/lifeline") {
			t.Skipf("skipping: %v (the supervisor and concentrator are built from it)", bins.lifelineErr)
		}
		t.Fatal(bins.lifelineErr)
	}
}

func buildWorld(t *testing.T, o Options) *World {
	t.Helper()
	o.LabBin = bins.lab
	o.Log = testLog{t}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := Build(ctx, o)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func ipOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func labNamespaces(t *testing.T, id string) []string {
	var ns []string
	for _, l := range strings.Split(ipOut(t, "netns", "list"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], NamePrefix+id) {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// TestWorld builds a world, checks it against what ip, tc and nft print,
// injects every fault, and checks that Close leaves nothing behind.
func TestWorld(t *testing.T) {
	needWorld(t)
	w, err := Build(context.Background(), Options{LabBin: bins.lab, Log: testLog{t}, WithWiFi: true, BackupQueueMin: 200 << 10})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer w.Close()
	if got := labNamespaces(t, w.ID); len(got) != 3 {
		t.Fatalf("namespaces %v, want router, isp and conc", got)
	}
	for _, p := range w.Paths {
		link := ipOut(t, "-n", w.Router, "-br", "addr", "show", "dev", p.Dev)
		if !strings.Contains(link, p.RouterAddr()+"/24") || !strings.Contains(link, "UP") {
			t.Errorf("router %s: %q, want UP with %s/24", p.Dev, link, p.RouterAddr())
		}
		qd, err := exec.Command("tc", "-n", w.Router, "qdisc", "show", "dev", p.Dev).CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(qd), "qdisc htb 1: root") || !strings.Contains(string(qd), "qdisc bfifo 10: parent 1:10") {
			t.Errorf("tc qdisc show dev %s:\n%s\nwant htb root with a bfifo", p.Dev, qd)
		}
		// The bfifo: 5 ms at the shaper's rate, at least 64 KiB (LTE's 12 KB
		// dropped the backup's first flight), on the backup at least
		// BackupQueueMin.
		js, err := exec.Command("tc", "-n", w.Router, "-j", "qdisc", "show", "dev", p.Dev, "parent", "1:10").CombinedOutput()
		if err != nil {
			t.Fatalf("tc -j qdisc show: %v: %s", err, js)
		}
		var qs []struct {
			Kind    string `json:"kind"`
			Options struct {
				Limit int `json:"limit"`
			} `json:"options"`
		}
		least := 64 << 10
		if p.Role == config.RoleBackup {
			least = 200 << 10
		}
		wantLimit := max(int(float64(w.ShaperRate(p))/8*0.005), least)
		if err := json.Unmarshal(js, &qs); err != nil || len(qs) != 1 || qs[0].Kind != "bfifo" || qs[0].Options.Limit != wantLimit {
			t.Errorf("bfifo on %s: %s (%v), want limit %d", p.Dev, js, err, wantLimit)
		}
		cl, _ := exec.Command("tc", "-n", w.Router, "class", "show", "dev", p.Dev).CombinedOutput()
		want := fmt.Sprintf("rate %s", tcRate(w.ShaperRate(p)))
		if !strings.Contains(string(cl), want) {
			t.Errorf("tc class show dev %s: %q, want %q", p.Dev, cl, want)
		}
	}
	cc, _ := exec.Command("ip", "netns", "exec", w.Router, "sysctl", "-n", "net.ipv4.tcp_congestion_control", "net.mptcp.enabled").CombinedOutput()
	if got := strings.Fields(string(cc)); len(got) != 2 || got[0] != "bbr" || got[1] != "1" {
		t.Errorf("router sysctls: %q, want bbr and mptcp enabled", cc)
	}

	fiber := w.Path("fiber")
	if _, err := w.SetCarrier(fiber, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fiber0 NO-CARRIER", func() bool {
		return strings.Contains(ipOut(t, "-n", w.Router, "link", "show", "fiber0"), "NO-CARRIER")
	})
	if _, err := w.SetCarrier(fiber, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fiber0 LOWER_UP", func() bool {
		return strings.Contains(ipOut(t, "-n", w.Router, "link", "show", "fiber0"), "LOWER_UP")
	})

	// A blackhole keeps the link up and drops the path's UDP: a probe
	// through the relay dies, and comes back after the restore.
	echo := echoServer(t, w, fiber)
	if !probeOnce(t, w, fiber) {
		t.Fatal("probe through the fiber relay failed before any fault")
	}
	if _, err := w.SetBlackhole(fiber, true); err != nil {
		t.Fatal(err)
	}
	rs, err := w.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rs, `iifname "ifiber0" udp dport 51820 drop`) || !strings.Contains(rs, `oifname "ifiber0" udp sport 51820 drop`) {
		t.Errorf("nft ruleset after blackhole:\n%s", rs)
	}
	if probeOnce(t, w, fiber) {
		t.Error("probe got through a blackholed path")
	}
	if !strings.Contains(ipOut(t, "-n", w.Router, "link", "show", "fiber0"), "LOWER_UP") {
		t.Error("blackhole took the link down")
	}
	if _, err := w.SetBlackhole(fiber, false); err != nil {
		t.Fatal(err)
	}
	if !probeOnce(t, w, fiber) {
		t.Error("probe failed after the blackhole was lifted")
	}
	echo.Close()

	id := w.ID
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := labNamespaces(t, id); len(left) > 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if _, err := os.Stat(w.Dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s left after Close (%v)", w.Dir, err)
	}
	if out, _ := exec.Command("pgrep", "-f", "lifeline-lab relay --name fiber.*"+id).Output(); len(out) > 0 {
		t.Errorf("relay processes left: %s", out)
	}
}

func tcRate(r uint64) string {
	switch {
	case r >= 1e6 && r%1e6 == 0:
		return fmt.Sprintf("%dMbit", r/1e6)
	case r >= 1e6:
		return fmt.Sprintf("%gMbit", float64(r)/1e6)
	}
	return fmt.Sprintf("%dKbit", r/1e3)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func echoServer(t *testing.T, w *World, p *Path) *net.UDPConn {
	var c *net.UDPConn
	err := inNetns(w.Conc, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ConcPublic), Port: p.Port})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return c
}

func probeOnce(t *testing.T, w *World, p *Path) bool {
	var c *net.UDPConn
	err := inNetns(w.Router, func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(p.Gateway()), Port: p.Port})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(p.Link.RTT + 300*time.Millisecond))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "hello"
}

// TestRTT checks that the idle RTT through every path is within 10 % or
// 1 ms of its setting, for the defaults and for a slower, longer line.
func TestRTT(t *testing.T) {
	needWorld(t)
	for _, o := range []Options{
		{},
		{Fiber: Link{100e6, 12 * time.Millisecond}, LTE: Link{5e6, 80 * time.Millisecond}},
	} {
		w := buildWorld(t, o)
		res, err := w.MeasureRTT(context.Background(), 30, 5*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			t.Logf("%s: set %.2f ms, median %.2f ms (min %.2f, max %.2f)", r.Path, r.SetMs, r.MedianMs, r.MinMs, r.MaxMs)
			if !r.OK {
				t.Errorf("%s: median RTT %.2f ms, set %.2f ms: outside 10 %% or 1 ms", r.Path, r.MedianMs, r.SetMs)
			}
		}
		w.Close()
	}
}

// TestFailover runs one small upload per scenario through the real
// supervisor and concentrator and asserts what the spine promises: every
// byte arrives, the hash matches and the one connection survives.
func TestFailover(t *testing.T) {
	needLifeline(t, "the failover runs take about a minute")
	for _, sc := range []Fault{FaultCut, FaultBlackhole, FaultFlap, FaultLoss} {
		t.Run(string(sc), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := Failover(ctx, FailoverOptions{
				World:        Options{LabBin: bins.lab, Log: testLog{t}},
				Lifeline:     LifelineOptions{Bin: bins.lifeline},
				Scenario:     sc,
				Size:         60e6,
				CutAt:        1500 * time.Millisecond,
				RestoreAfter: 2 * time.Second,
				StallTimeout: 15 * time.Second,
			})
			if res != nil {
				t.Logf("%s: stall %.1f ms (max %.1f), breakdown detected %v removed %v lte %v new %v, fiber %.0f lte %.0f Mbit/s, dup %d",
					sc, res.FaultStallMs, res.MaxStallMs, f(res.Breakdown.DetectedMs), f(res.Breakdown.EndpointRemovedMs),
					f(res.Breakdown.FirstLTEByteMs), f(res.Breakdown.FirstNewByteMs), res.FiberMbps, res.LTEMbps, res.DuplicateData)
			}
			if err != nil {
				if res != nil && res.Evidence != nil {
					t.Logf("evidence: %+v", *res.Evidence)
				}
				t.Fatalf("Failover(%s): %v", sc, err)
			}
			if !res.SHA256Match {
				t.Errorf("sha256 mismatch: %d of %d bytes", res.BytesReceived, res.Size)
			}
			if !res.ConnectionSurvived {
				t.Error("the connection did not survive")
			}
			if res.Hung {
				t.Error("hung")
			}
			if res.LostBytes != 0 {
				t.Errorf("lost %d bytes", res.LostBytes)
			}
			if res.FaultAtMs <= 0 {
				t.Error("the fault was never injected")
			}
			// 5 % random loss on the fiber: the policy must not flap
			// (at most one switch each way).
			if sc == FaultLoss && res.PathSwitches > 2 {
				t.Errorf("%d path switches under 5%% loss, want at most one each way", res.PathSwitches)
			}
			// The fail-back flush: once the fiber's subflow was back, the
			// supervisor handed LTE's queue to it (the upload was still
			// running at the restore).
			if sc != FaultLoss {
				flushed := false
				for _, e := range res.Events {
					if e.Event == "backlog_flushed" && e.Uplink == "lte" && e.Ms > res.RestoreAtMs-res.FaultAtMs {
						flushed = true
					}
				}
				if !flushed {
					t.Errorf("no backlog_flushed event for lte after the restore: %v", res.Events)
				}
			}
			// The per-subflow plot's data: the fiber's tunnel carried the
			// upload before the fault.
			if fs := res.SubflowSeries["fiber"]; len(fs) < 5 || slices.Max(fs[:5]) < 1 {
				t.Errorf("fiber subflow series %v: want the upload's first half second on it", fs)
			}
		})
	}
}

// TestFailoverTooSmall: an upload that ends before the fault is reported
// as such (the schedule must not wait for a verdict it already consumed).
// Three cut/restore cycles in one upload: after every restore the fiber's subflow must
// be back and the backup's too, ready for the next fault, with no join rejected by the
// concentrator (the kernel's default of 2 joined subflows once rejected the backup's
// re-join at a fail-back).
func TestFailoverCycles(t *testing.T) {
	needLifeline(t, "the run takes about 25 s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Failover(ctx, FailoverOptions{
		World:        Options{LabBin: bins.lab, Log: testLog{t}},
		Lifeline:     LifelineOptions{Bin: bins.lifeline},
		Scenario:     FaultCut,
		Size:         350e6,
		CutAt:        1500 * time.Millisecond,
		RestoreAfter: 2 * time.Second,
		StallTimeout: 15 * time.Second,
		Cycles:       3,
	})
	if err != nil {
		t.Fatalf("Failover: %v", err)
	}
	if !res.SHA256Match || !res.ConnectionSurvived || res.Hung || res.LostBytes != 0 {
		t.Errorf("sha256 match %v, survived %v, hung %v, lost %d", res.SHA256Match, res.ConnectionSurvived, res.Hung, res.LostBytes)
	}
	if len(res.Cycles) != 3 {
		t.Fatalf("%d cycle checks, want 3 (did the upload end early? %.0f ms): %+v", len(res.Cycles), res.DurationMs, res.Cycles)
	}
	for _, c := range res.Cycles {
		if c.Error != "" || !slices.Equal(c.Subflows, []string{"fiber", "lte backup"}) || c.JoinsRejected != 0 {
			t.Errorf("cycle %d, %.0f ms after the restore: subflows %q, joins rejected %d, error %q; want fiber and lte backup, none rejected",
				c.Cycle, c.AfterRestoreMs, c.Subflows, c.JoinsRejected, c.Error)
		}
	}
}

func TestFailoverTooSmall(t *testing.T) {
	needLifeline(t, "it starts the supervisor and the concentrator")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Failover(ctx, FailoverOptions{
		World:    Options{LabBin: bins.lab, Log: testLog{t}},
		Lifeline: LifelineOptions{Bin: bins.lifeline},
		Scenario: FaultCut, Size: 1e6, CutAt: 5 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "finished before the fault") {
		t.Fatalf("Failover: err = %v, want \"finished before the fault\"", err)
	}
	if !res.SHA256Match || res.FaultAtMs != 0 {
		t.Errorf("sha256 match %v, fault at %v ms: want a clean upload and no fault", res.SHA256Match, res.FaultAtMs)
	}
}

func f(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fms", *p)
}

// TestWatchdogCatchesHang makes a transfer stop for good (the LTE path is
// blackholed too, right after the fiber) and checks that the run fails as
// hung, with ss and nstat evidence from both ends, instead of waiting.
func TestWatchdogCatchesHang(t *testing.T) {
	needLifeline(t, "it starts the supervisor and the concentrator")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := buildWorld(t, Options{})
	if err := w.StartLifeline(ctx, LifelineOptions{Bin: bins.lifeline}); err != nil {
		t.Fatal(err)
	}
	o := FailoverOptions{
		World:    Options{LabBin: bins.lab},
		Lifeline: LifelineOptions{Bin: bins.lifeline},
		Scenario: FaultBlackhole, Size: 1e9, CutAt: time.Second, RestoreAfter: time.Minute,
		StallTimeout: 3 * time.Second,
	}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	// Kill LTE as soon as the fiber's blackhole is in place.
	go func() {
		for ctx.Err() == nil {
			if rs, _ := w.Ruleset(); strings.Contains(rs, `"ifiber0" udp dport`) {
				w.SetBlackhole(w.Path("lte"), true)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	start := time.Now()
	res, err := w.RunFailover(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "hung") {
		t.Fatalf("RunFailover: err = %v, want a hung transfer", err)
	}
	if !res.Hung || res.Evidence == nil {
		t.Fatalf("hung %v evidence %v", res.Hung, res.Evidence != nil)
	}
	if time.Since(start) > 40*time.Second {
		t.Errorf("the watchdog took %v to give up (stall timeout 3s, restore after 1m)", time.Since(start))
	}
	ev := res.Evidence
	t.Logf("evidence note: %s", ev.Note)
	if !strings.Contains(ev.Note, "subflow") {
		t.Errorf("evidence note %q does not say what became of the subflows", ev.Note)
	}
	if !strings.Contains(ev.RouterSS, "10.55.0.1:5201") || !strings.Contains(ev.ConcNstat, "MPTcpExt") {
		t.Errorf("evidence lacks the connection or the MPTCP counters:\nrouter ss:\n%s\nconc nstat (head): %.300s", ev.RouterSS, ev.ConcNstat)
	}
}
