package vmtest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// InVM reports whether this process runs inside a vmtest guest. A test that
// needs the board kernel calls GoTest when it is false and does its real work
// when it is true.
func InVM() bool { return os.Getenv("LIFELINE_IN_VM") == "1" }

// Skip skips t when the VM stage cannot run here: no QEMU, no board kernel,
// or -short (the host stage of `make test`).
func Skip(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("VM stage test: skipped in -short mode (run make vmtest)")
	}
	if _, err := exec.LookPath(qemuBinary()); err != nil {
		t.Skipf("VM stage test: %v (apt-get install qemu-system-x86)", err)
	}
	if _, err := DefaultKernel(); err != nil {
		t.Skipf("VM stage test: %v", err)
	}
}

// RunT is Run for tests: it skips when the VM stage cannot run here, logs the
// accelerator and timing, and fails t on a kernel panic or timeout (with the
// console attached). The script's exit status is left to the caller.
func RunT(t testing.TB, opts Options) *Result {
	t.Helper()
	Skip(t)
	if opts.Output == nil {
		opts.Output = &testLogWriter{t: t, prefix: "guest: "}
	}
	accel, why := Accel()
	ctx, cancel := testContext(t, 0)
	defer cancel()
	res, err := Run(ctx, opts)
	if err != nil {
		console := ""
		if res != nil {
			console = LastLines(res.Console, 60)
		}
		t.Fatalf("vmtest.Run (%s: %s): %v\nserial console (last lines):\n%s", accel, why, err, console)
	}
	t.Logf("VM (%s) ran in %v, exit status %d", accel, res.Duration.Round(time.Millisecond), res.ExitCode)
	return res
}

// testContext returns a context that ends at max (when non-zero) or a few
// seconds before the test binary's -timeout, whichever is first, so that a
// hung VM fails with its console instead of a goroutine dump.
func testContext(tb testing.TB, max time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if max > 0 {
		ctx, cancel = context.WithTimeout(ctx, max)
	}
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			c2, cancel2 := context.WithDeadline(ctx, dl.Add(-10*time.Second))
			return c2, func() { cancel2(); cancel() }
		}
	}
	return ctx, cancel
}

// GoTestOptions select what GoTest runs in the guest.
type GoTestOptions struct {
	// Run is the -test.run pattern; normally "^" + t.Name() + "$".
	Run string
	// Args are extra test binary flags.
	Args []string
	// Tools and Files are passed to Options.
	Tools []string
	Files map[string]string
	// Timeout bounds the VM run (default 5 minutes).
	Timeout time.Duration
	CPUs    int
	// VirtualClock runs the guest on a virtual clock (Options.VirtualClock):
	// for tests whose protocol timeouts (a WPA handshake, a probe) must
	// not fire because the host is busy.
	VirtualClock bool
}

// GoTest compiles the test binary of the package in the working directory
// (where go test runs a package's tests), boots the board kernel with it and
// runs the selected tests inside as root, with the package's testdata. It
// fails t when the tests fail in the guest, the kernel panics or the VM times
// out. Call it from a test whose body runs only when InVM() is true.
func GoTest(t testing.TB, o GoTestOptions) {
	t.Helper()
	Skip(t)
	if o.Run == "" {
		o.Run = "^" + t.Name() + "$"
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "pkg.test")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	build := exec.Command(gobin, "test", "-c", "-o", bin, ".")
	// Static, no race detector: the guest has no libc for cgo.
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c .: %v\n%s", err, out)
	}
	files := map[string]string{"/vmtest/pkg.test": bin}
	for g, h := range o.Files {
		files[g] = h
	}
	if err := filepath.Walk("testdata", func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		files["/vmtest/pkg/"+filepath.ToSlash(p)] = p
		return nil
	}); err != nil {
		t.Fatalf("walking testdata: %v", err)
	}
	args := []string{"-test.v", "-test.run", shellQuote(o.Run)}
	for _, a := range o.Args {
		args = append(args, shellQuote(a))
	}
	script := "mkdir -p /vmtest/pkg && cd /vmtest/pkg && /vmtest/pkg.test " + strings.Join(args, " ") + "\n"
	res := RunT(t, Options{Files: files, Tools: o.Tools, Script: script, Timeout: o.Timeout, CPUs: o.CPUs, VirtualClock: o.VirtualClock, VirtualClockShift: 1})
	if res.ExitCode != 0 {
		t.Fatalf("guest test binary exited with %d", res.ExitCode)
	}
	if !strings.Contains(res.Output, "\nPASS") && !strings.HasPrefix(res.Output, "PASS") {
		t.Fatalf("guest test binary did not report PASS")
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// LastLines returns the last n lines of s (for failure messages).
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// testLogWriter logs whole lines to t.
type testLogWriter struct {
	t      testing.TB
	prefix string
	buf    bytes.Buffer
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		line := string(w.buf.Next(i + 1))
		w.t.Log(w.prefix + strings.TrimRight(line, "\r\n"))
	}
	return len(p), nil
}
