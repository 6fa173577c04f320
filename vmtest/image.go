package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// NIC is one virtio network card of the image VM. The guest names them
// eth0, eth1, ... in the order given.
type NIC struct {
	// Role documents what the card is (lan, fiber, wifi, lte).
	Role string
	// Netdev is the QEMU -netdev value without id, e.g. "user" or
	// "socket,listen=:1234". Empty means "user,restrict=on" (isolated).
	Netdev string
	// MAC is the card's address; empty derives one from the position.
	MAC string
}

// DefaultNICs is the board's port layout (board/amd64/README.md): eth0 is
// the LAN/management port where the update API and health endpoint live,
// then one port per uplink. The uplinks get isolated user-mode networks, so
// they have DHCP but do not reach the host's network.
func DefaultNICs(lanHostFwdPort int) []NIC {
	lan := "user,restrict=on"
	if lanHostFwdPort > 0 {
		lan += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:80", lanHostFwdPort)
	}
	return []NIC{
		{Role: "lan", Netdev: lan},
		{Role: "fiber", Netdev: "user,restrict=on,net=10.0.11.0/24"},
		{Role: "wifi", Netdev: "user,restrict=on,net=10.0.12.0/24"},
		{Role: "lte", Netdev: "user,restrict=on,net=10.0.13.0/24"},
	}
}

// ImageOptions describe a VM booting a full gokrazy image.
type ImageOptions struct {
	Image string // raw disk image (build/lifeline-amd64-test.img)
	// Persist writes to Image itself; by default writes go to a temporary
	// overlay (-snapshot) that survives guest reboots but not QEMU.
	Persist bool
	NICs    []NIC
	// ModemPTY, when set, is a host tty (the modem simulator's pty) that
	// the guest sees as a USB serial adapter (FTDI, /dev/ttyUSB0).
	ModemPTY       string
	MemoryMB, CPUs int
}

// ImageArgs returns the QEMU arguments (without accelerator and serial
// console) for o.
func ImageArgs(o ImageOptions) []string {
	if o.MemoryMB == 0 {
		o.MemoryMB = 1024
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	args := []string{
		"-M", "pc", "-m", strconv.Itoa(o.MemoryMB), "-smp", strconv.Itoa(o.CPUs),
		"-nodefaults", "-vga", "none",
		"-drive", "file=" + o.Image + ",format=raw,if=none,id=disk",
		"-device", "virtio-blk-pci,drive=disk",
		"-device", "virtio-rng-pci",
	}
	if !o.Persist {
		args = append(args, "-snapshot")
	}
	for i, n := range o.NICs {
		netdev := n.Netdev
		if netdev == "" {
			netdev = "user,restrict=on"
		}
		mac := n.MAC
		if mac == "" {
			mac = fmt.Sprintf("52:54:00:4c:46:%02x", i)
		}
		id := fmt.Sprintf("n%d", i)
		kind, rest, _ := strings.Cut(netdev, ",")
		if rest != "" {
			rest = "," + rest
		}
		args = append(args,
			"-netdev", kind+",id="+id+rest,
			"-device", "virtio-net-pci,netdev="+id+",mac="+mac)
	}
	if o.ModemPTY != "" {
		args = append(args,
			"-device", "qemu-xhci,id=xhci",
			"-chardev", "serial,id=modem,path="+o.ModemPTY,
			"-device", "usb-serial,bus=xhci.0,chardev=modem")
	}
	return args
}

// BootImage starts QEMU on a gokrazy image with the serial console captured
// (and copied to echo when non-nil).
func BootImage(ctx context.Context, o ImageOptions, echo io.Writer) (*Machine, error) {
	if _, err := os.Stat(o.Image); err != nil {
		return nil, fmt.Errorf("image: %w (run make image-test)", err)
	}
	return StartMachine(ctx, ImageArgs(o), echo)
}

// BootImageUntil boots the image and waits for a console line containing
// line. Like Run, it boots once more after an int3 oops in the kernel's own
// context under TCG (see bootPatchRace): the image is not written before
// the kernel is up, so the second boot starts from the same state.
func BootImageUntil(ctx context.Context, o ImageOptions, echo io.Writer, line string) (*Machine, string, error) {
	for attempt := 0; ; attempt++ {
		m, err := BootImage(ctx, o, echo)
		if err != nil {
			return nil, "", err
		}
		got, err := m.WaitForLine(ctx, line)
		if err == nil {
			return m, got, nil
		}
		m.Kill()
		if attempt > 0 || !errors.Is(err, ErrKernelPanic) || !bootAgain(ctx, m.Console(), echo) {
			return nil, "", fmt.Errorf("waiting for %q: %w\nserial console (last lines):\n%s", line, err, LastLines(m.Console(), 80))
		}
	}
}

// ModemSim is the host-side modem simulator process backing the guest's USB
// serial AT port.
type ModemSim struct {
	PTY string
	cmd *exec.Cmd
}

// StartModemSim runs the lifeline-modemsim binary with a modem profile and
// returns once it has printed the pty it serves.
func StartModemSim(ctx context.Context, bin, profile string, stderr io.Writer) (*ModemSim, error) {
	cmd := exec.CommandContext(ctx, bin, "--profile", profile)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("modemsim StdoutPipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			default: // later re-creations: QEMU keeps the first pty open
			}
		}
		close(lines)
	}()
	select {
	case p, ok := <-lines:
		if !ok || !strings.HasPrefix(p, "/dev/") {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("%s --profile %s: no pty path on stdout (got %q)", bin, profile, p)
		}
		return &ModemSim{PTY: p, cmd: cmd}, nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%s --profile %s: no pty after 30s", bin, profile)
	}
}

// Stop ends the simulator.
func (m *ModemSim) Stop() {
	m.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		m.cmd.Process.Kill()
		<-done
	}
}
