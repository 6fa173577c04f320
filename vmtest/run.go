package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options describe one VM run: a kernel, an initramfs built from busybox plus
// the given files and tools, and a shell script to run as root inside.
type Options struct {
	// Kernel is the bzImage to boot; empty means DefaultKernel().
	Kernel string
	// Files maps guest paths to host files copied into the initramfs
	// (test binaries, fixtures).
	Files map[string]string
	// Tools are host executables (e.g. "tc", "nft") copied with their
	// shared libraries, at the same path as on the host.
	Tools []string
	// Script is run by busybox sh as root, in /, with PATH covering the
	// tools and LIFELINE_IN_VM=1. Its exit status is the Result's.
	Script string
	// Timeout bounds the whole run, boot included (default 5 minutes).
	Timeout time.Duration
	// MemoryMB (default 1024) and CPUs (default 2) size the VM.
	MemoryMB, CPUs int
	// Append is added to the kernel command line.
	Append string
	// Console receives the serial console (kernel log) live, Output the
	// script's output live; both may be nil.
	Console, Output io.Writer
	// Verbose boots without "quiet" so the console shows the whole boot.
	Verbose bool
	// VirtualClock, under TCG, runs the guest on a virtual clock
	// (-icount shift=VirtualClockShift,sleep=off): guest time advances
	// with the instructions executed (2^shift ns each) and skips idle
	// time, so a busy host makes a run slower but not noisier. It costs
	// single-threaded TCG. Ignored under KVM.
	VirtualClock      bool
	VirtualClockShift int
}

// Result is what a finished run produced.
type Result struct {
	Output   string        // the script's stdout and stderr (hvc0)
	ExitCode int           // the script's exit status
	Console  string        // serial console: kernel log, panics
	Duration time.Duration // QEMU start to exit marker
}

const exitMarker = "VMTEST-EXIT: "

// initScript mounts what tests expect of a Linux system and runs the user's
// script with its output on hvc0. It powers off instead of returning:
// init exiting would panic the kernel and look like a failure.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp LIFELINE_IN_VM=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
ln -sf /proc/self/fd /dev/fd
echo 127.0.0.1 localhost > /etc/hosts
ip link set lo up
# hvc0 is a tty: no CR/LF translation, no echo, so output arrives verbatim.
exec </dev/hvc0 >/dev/hvc0 2>&1
stty raw -echo
exec </dev/null
cd /
sh /vmtest/script
rc=$?
echo
echo "` + exitMarker + `$rc"
sync
poweroff -f
`

// Run boots the kernel with the files, tools and script of opts and returns
// when the script has finished. A kernel panic returns an error wrapping
// ErrKernelPanic, a timeout one wrapping ErrTimeout; both carry the console.
//
// One panic is retried: under TCG, an int3 oops in the kernel's own context
// (Comm: swapper/, the idle task or PID 1 before it runs /init; see
// bootPatchRace). The kernel patches its own code at boot
// (static calls, jump labels) by writing an int3 first and synchronising the
// other CPUs; under multi-threaded TCG another vCPU once ran the int3 after
// the patch was done (clean-clone make test, TestVMExitStatus, "Oops: int3"
// in sched_clock_cpu from devtmpfs, our kernel and the same test passing in
// the runs before and after). A second boot says whether it is the kernel.
func Run(ctx context.Context, opts Options) (*Result, error) {
	res, err := runOnce(ctx, opts)
	if err != nil && res != nil && bootAgain(ctx, res.Console, opts.Console) {
		return runOnce(ctx, opts)
	}
	return res, err
}

// bootAgain says whether a failed boot with this console gets its one more
// try (a bootPatchRace under TCG, with time left), and says so on echo.
func bootAgain(ctx context.Context, console string, echo io.Writer) bool {
	if ctx.Err() != nil || !bootPatchRace(console) {
		return false
	}
	if a, _ := Accel(); a == "kvm" {
		return false
	}
	if echo != nil {
		fmt.Fprintf(echo, "vmtest: int3 oops in the kernel's own context under TCG (a text-patching race of the emulator): booting once more\n")
	}
	return true
}

// bootPatchRace reports a console that oopsed on an int3 in the kernel's own
// context (swapper: the idle task, or PID 1 before it runs /init).
func bootPatchRace(console string) bool {
	i := strings.Index(console, "Oops: int3")
	return i >= 0 && strings.Contains(console[i:], "Comm: swapper/")
}

func runOnce(ctx context.Context, opts Options) (*Result, error) {
	if opts.Kernel == "" {
		k, err := DefaultKernel()
		if err != nil {
			return nil, err
		}
		opts.Kernel = k
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 1024
	}
	if opts.CPUs == 0 {
		opts.CPUs = 2
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		return nil, fmt.Errorf("MkdirTemp: %w", err)
	}
	defer os.RemoveAll(dir)

	ir, err := NewInitramfs()
	if err != nil {
		return nil, err
	}
	for _, tool := range opts.Tools {
		if err := ir.AddTool(tool); err != nil {
			return nil, err
		}
	}
	for guest, host := range opts.Files {
		if err := ir.AddFile(guest, host); err != nil {
			return nil, err
		}
	}
	ir.AddBytes("/init", []byte(initScript), 0o755)
	ir.AddBytes("/vmtest/script", []byte(toolFunctions(opts.Tools)+opts.Script), 0o755)
	ir.AddSymlink("/var/run", "/run")
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := ir.WriteFile(initrd); err != nil {
		return nil, err
	}

	// The script's output arrives on a unix socket QEMU connects to, so it
	// is never interleaved with kernel messages.
	sock := filepath.Join(dir, "hvc0.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("Listen(unix, %s): %w", sock, err)
	}
	defer ln.Close()
	var out lockedBuffer
	outDone := make(chan struct{})
	connc := make(chan net.Conn, 1)
	go func() {
		defer close(outDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		connc <- c
		defer c.Close()
		var w io.Writer = &out
		if opts.Output != nil {
			w = io.MultiWriter(&out, opts.Output)
		}
		io.Copy(w, c)
	}()

	cmdline := "console=ttyS0 panic=-1 oops=panic rdinit=/init"
	if !opts.Verbose {
		cmdline += " quiet"
	}
	if opts.Append != "" {
		cmdline += " " + opts.Append
	}
	a, _ := Accel()
	if a == "tcg" {
		// The kernel checks early that the IO-APIC timer ticks within a
		// busy loop; emulated on a loaded host it may not, and the boot
		// panics ("IO-APIC + timer doesn't work!", seen here with three
		// guests on two cores).
		cmdline += " no_timer_check"
	}
	var clock []string
	if opts.VirtualClock && a == "tcg" {
		clock = []string{"-icount", fmt.Sprintf("shift=%d,sleep=off", opts.VirtualClockShift)}
	}
	m, err := StartMachine(ctx, append(clock,
		"-M", "pc", "-m", strconv.Itoa(opts.MemoryMB), "-smp", strconv.Itoa(opts.CPUs),
		"-nodefaults", "-no-reboot", "-nic", "none",
		"-kernel", opts.Kernel, "-initrd", initrd, "-append", cmdline,
		"-chardev", "socket,id=out,path="+sock,
		"-device", "virtio-serial-pci", "-device", "virtconsole,chardev=out",
	), opts.Console)
	if err != nil {
		return nil, err
	}
	waitErr := m.Wait()
	ln.Close()
	select {
	case <-outDone:
	case <-time.After(2 * time.Second):
		// QEMU is gone; whatever did not arrive by now never will. Make
		// sure the copier stops before Run returns (it may log to a test).
		select {
		case c := <-connc:
			c.Close()
		default:
		}
		<-outDone
	}
	res := &Result{Output: out.String(), Console: m.Console(), ExitCode: -1, Duration: time.Since(m.Started())}
	if p := m.PanicLine(); p != "" {
		return res, fmt.Errorf("%w: %s", ErrKernelPanic, p)
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("after %v: %w", opts.Timeout, ErrTimeout)
	}
	code, output, ok := parseExit(res.Output)
	if !ok {
		return res, fmt.Errorf("guest powered off without an exit status (qemu: %v)", waitErr)
	}
	res.ExitCode, res.Output = code, output
	return res, nil
}

var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// toolFunctions defines a shell function per tool. Debian's static busybox
// is built with FEATURE_SH_STANDALONE: its sh runs its own applet (a tc or ip
// without CAKE or WireGuard support) ahead of anything in PATH. Functions win
// over applets. Programs (Go's exec.LookPath) see PATH and are unaffected.
func toolFunctions(tools []string) string {
	var b strings.Builder
	for _, t := range tools {
		p, err := exec.LookPath(t)
		if err != nil || !shellName.MatchString(filepath.Base(t)) {
			continue
		}
		fmt.Fprintf(&b, "%s() { %s \"$@\"; }\n", filepath.Base(t), p)
	}
	return b.String()
}

var exitRE = regexp.MustCompile(`(?m)^` + exitMarker + `(\d+)\r?$`)

func parseExit(s string) (code int, output string, ok bool) {
	locs := exitRE.FindAllStringSubmatchIndex(s, -1)
	if len(locs) == 0 {
		return 0, s, false
	}
	l := locs[len(locs)-1]
	code, err := strconv.Atoi(s[l[2]:l[3]])
	if err != nil {
		return 0, s, false
	}
	output = strings.TrimSuffix(s[:l[0]], "\n")
	return code, output, true
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// IsKernelPanic reports whether err is a guest kernel panic.
func IsKernelPanic(err error) bool { return errors.Is(err, ErrKernelPanic) }
