package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/lifeline-router/lifeline/image/elfbundle"
)

const pkg = "github.com/lifeline-router/lifeline/image/wpa_supplicant"

func TestArgv(t *testing.T) {
	got := argv("/b", []string{"-i", "wlan0"})
	want := []string{"/b/ld-linux-x86-64.so.2", "--library-path", "/b", "--argv0", "wpa_supplicant", "/b/wpa_supplicant", "-i", "wlan0"}
	if !slices.Equal(got, want) {
		t.Errorf("argv = %q, want %q", got, want)
	}
}

// TestImageConfigCarriesBundle checks the wiring in image/config.json: this
// package is in the image (so it is /user/wpa_supplicant, where the WiFi
// manager looks), is not started at boot, and the bundle mkinstance writes
// lands in BundleDir.
func TestImageConfigCarriesBundle(t *testing.T) {
	var cfg struct {
		Packages      []string
		PackageConfig map[string]struct {
			DontStart      bool
			ExtraFilePaths map[string]string
		}
	}
	b, err := os.ReadFile("../config.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	if !slices.Contains(cfg.Packages, pkg) {
		t.Errorf("config.json Packages lack %s", pkg)
	}
	if filepath.Base(pkg) != "wpa_supplicant" {
		t.Errorf("package base name %q: gokrazy would install it as /user/%s", filepath.Base(pkg), filepath.Base(pkg))
	}
	pc := cfg.PackageConfig[pkg]
	if !pc.DontStart {
		t.Errorf("PackageConfig[%s].DontStart is false: gokrazy would start the supplicant at boot without arguments", pkg)
	}
	if got := pc.ExtraFilePaths[BundleDir]; got != "build/gokrazy/wpa_supplicant" {
		t.Errorf("PackageConfig[%s].ExtraFilePaths[%s] = %q, want build/gokrazy/wpa_supplicant (what mkinstance writes)", pkg, BundleDir, got)
	}
}

// TestBundleRunsWithoutHostLibc lays the image's part out in an empty
// directory (the static shim as /user/wpa_supplicant, the bundle in
// BundleDir, nothing else: no /lib, no /lib64) and runs it chrooted there.
// The bundled program run directly must fail (no interpreter at
// /lib64/ld-linux-x86-64.so.2: the chroot really has no libc), the shim
// must start it. LD_BIND_NOW makes the loader resolve every symbol up
// front, so a missing library or symbol fails here and not at the first
// association.
func TestBundleRunsWithoutHostLibc(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot)")
	}
	src := "/usr/sbin/wpa_supplicant"
	if _, err := os.Stat(src); err != nil {
		t.Skipf("needs Debian's wpa_supplicant (apt-get install wpasupplicant): %v", err)
	}
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bdir := filepath.Join(root, BundleDir)
	b, err := elfbundle.Write(src, Program, bdir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Interpreter != Loader {
		t.Fatalf("bundle interpreter %q, the shim runs %q", b.Interpreter, Loader)
	}
	t.Logf("bundle: %d files\n%s", len(b.Files), b.Manifest())

	shim := filepath.Join(root, "user", "wpa_supplicant")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", shim, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s .: %v\n%s", shim, err, out)
	}
	for _, d := range []string{"lib", "lib64", "usr/lib/x86_64-linux-gnu"} {
		if _, err := os.Stat(filepath.Join(root, d)); err == nil {
			t.Fatalf("chroot has /%s: not a libc-free root", d)
		}
	}

	// The image has devtmpfs; the supplicant seeds its random pool from
	// /dev/urandom at start.
	if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, minor := range map[string]int{"null": 3, "urandom": 9} {
		if err := syscall.Mknod(filepath.Join(root, "dev", name), syscall.S_IFCHR|0o666, 1<<8|minor); err != nil {
			t.Fatalf("Mknod(/dev/%s): %v", name, err)
		}
	}

	chrooted := func(args ...string) *exec.Cmd {
		c := exec.Command(args[0], args[1:]...)
		c.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		c.Dir = "/"
		c.Env = []string{"LD_BIND_NOW=1"}
		return c
	}
	// Control: without the loader invoked explicitly the kernel looks for
	// the host's interpreter, which the chroot lacks.
	direct := chrooted(filepath.Join(BundleDir, Program), "-v")
	if out, err := direct.CombinedOutput(); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("bundled program ran directly in the chroot (err %v): the chroot is not libc-free\n%s", err, out)
	}

	out, err := chrooted("/user/wpa_supplicant", "-v").CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %s /user/wpa_supplicant -v: %v\n%s", root, err, out)
	}
	if !strings.HasPrefix(string(out), "wpa_supplicant v2.") {
		t.Fatalf("chroot /user/wpa_supplicant -v printed %q, want the version banner", out)
	}
	t.Logf("in the chroot: %s", strings.SplitN(string(out), "\n", 2)[0])

	// The supplicant's own usage (-h) exercises option parsing and the
	// driver table, i.e. the program really runs, not just the loader.
	out, _ = chrooted("/user/wpa_supplicant", "-h").CombinedOutput()
	if !strings.Contains(string(out), "nl80211") {
		t.Errorf("chroot /user/wpa_supplicant -h lacks the nl80211 driver:\n%s", out)
	}
}
