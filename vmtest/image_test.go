package vmtest

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// readyLine is what the supervisor prints on the serial console once it has
// applied its configuration (issue 5: "the boot test reads the serial output
// and checks the supervisor reports ready").
const readyLine = "lifeline: ready"

func testImage(tb testing.TB) string {
	tb.Helper()
	Skip(tb)
	img := os.Getenv("LIFELINE_IMAGE")
	if img == "" {
		tb.Skip("LIFELINE_IMAGE not set: the image boot test runs in make vmtest / make vmtest-image")
	}
	return img
}

func buildModemSim(tb testing.TB) (profile, bin string) {
	tb.Helper()
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	bin = filepath.Join(tb.TempDir(), "lifeline-modemsim")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/lifeline-modemsim")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./cmd/lifeline-modemsim: %v\n%s", err, out)
	}
	return filepath.Join(root, "modem", "testdata", "profiles", "quectel-rm520n-sa.json"), bin
}

// bootToReady boots the image with the modem simulator on its USB serial
// port and returns the time from QEMU start to the ready line.
func bootToReady(tb testing.TB, img string, echo bool) time.Duration {
	tb.Helper()
	ctx, cancel := testContext(tb, 4*time.Minute)
	defer cancel()
	profile, bin := buildModemSim(tb)
	sim, err := StartModemSim(ctx, bin, profile, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer sim.Stop()
	var w io.Writer // nil interface, not a nil *testLogWriter
	if echo {
		w = &testLogWriter{t: tb, prefix: "serial: "}
	}
	o := ImageOptions{Image: img, NICs: DefaultNICs(0), ModemPTY: sim.PTY}
	m, line, err := BootImageUntil(ctx, o, w, readyLine)
	if err != nil {
		tb.Fatal(err)
	}
	defer m.Kill()
	d := time.Since(m.Started())
	tb.Logf("ready after %v: %s", d.Round(10*time.Millisecond), line)
	return d
}

func TestVMImageBoot(t *testing.T) {
	img := testImage(t)
	a, why := Accel()
	d := bootToReady(t, img, testing.Verbose())
	t.Logf("image %s booted to ready in %v (%s: %s)", img, d, a, why)
}

// BenchmarkVMImageBoot reports boot-to-ready time and the image size
// (issue 5 goals: ready ≤ 15 s under TCG, image ≤ 64 MB), and writes them to
// $LIFELINE_BENCH_OUT as JSON when set.
func BenchmarkVMImageBoot(b *testing.B) {
	img := testImage(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		total += bootToReady(b, img, false)
	}
	ready := total / time.Duration(b.N)
	b.ReportMetric(ready.Seconds(), "s-to-ready")
	size, used := imageSize(b, img)
	b.ReportMetric(float64(used)/(1<<20), "MiB-used")
	a, _ := Accel()
	if out := os.Getenv("LIFELINE_BENCH_OUT"); out != "" {
		res := map[string]any{
			"image":                img,
			"image_apparent_bytes": size,
			"image_used_bytes":     used,
			"ready_seconds":        ready.Seconds(),
			"accel":                a,
			"goal_ready_seconds":   15,
			"goal_image_bytes":     64 << 20,
		}
		js, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(out, append(js, '\n'), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}
