// Command vm boots a Lifeline image in QEMU for a person at the terminal
// (make vm): the serial console on stdin/stdout, one virtio NIC per port
// (eth0 lan, eth1 fiber, eth2 wifi, eth3 lte), and the LTE modem's AT port as
// a USB serial adapter backed by the modem simulator running on the host.
//
// It exists so that "what does the router do on boot" is one command away
// without hardware, with the same QEMU arguments the VM tests use
// (vmtest.ImageArgs).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/lifeline-router/lifeline/vmtest"
)

func main() {
	if err := logic(); err != nil {
		fmt.Fprintln(os.Stderr, "vm:", err)
		os.Exit(1)
	}
}

func logic() error {
	image := flag.String("image", "build/lifeline-amd64-test.img", "gokrazy disk image")
	profile := flag.String("profile", "modem/testdata/profiles/quectel-rm520n-sa.json", "modem simulator profile (empty: no modem)")
	updatePort := flag.Int("update-port", 8080, "host port forwarded (127.0.0.1 only) to the device's HTTP/update port on the lan NIC")
	persist := flag.Bool("persist", false, "write to the image instead of a throw-away overlay")
	mem := flag.Int("m", 1024, "guest memory in MiB")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()

	o := vmtest.ImageOptions{
		Image:    *image,
		Persist:  *persist,
		NICs:     vmtest.DefaultNICs(*updatePort),
		MemoryMB: *mem,
	}
	if *profile != "" {
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("lifeline-modemsim-%d", os.Getpid()))
		build := exec.Command("go", "build", "-o", bin, "./cmd/lifeline-modemsim")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/lifeline-modemsim: %w", err)
		}
		defer os.Remove(bin)
		sim, err := vmtest.StartModemSim(ctx, bin, *profile, nil)
		if err != nil {
			return err
		}
		defer sim.Stop()
		o.ModemPTY = sim.PTY
	}
	if _, err := os.Stat(o.Image); err != nil {
		return fmt.Errorf("image: %w (make image-test)", err)
	}
	accel, why := vmtest.Accel()
	fmt.Fprintf(os.Stderr, "vm: %s (%s); eth0=lan (http://127.0.0.1:%d), eth1=fiber, eth2=wifi, eth3=lte; modem AT port %s\n",
		accel, why, *updatePort, orNone(o.ModemPTY))
	fmt.Fprintln(os.Stderr, "vm: serial console follows; Ctrl-a x quits QEMU, Ctrl-a c toggles its monitor")
	args := append(vmtest.AccelArgs(), "-display", "none", "-serial", "mon:stdio")
	args = append(args, vmtest.ImageArgs(o)...)
	q := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	q.Stdin, q.Stdout, q.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := q.Run(); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
