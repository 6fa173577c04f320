package lab

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeline-router/lifeline/vmtest"
)

// The VM stage of the lab: the same world and commands, inside our board
// kernel under qemu, where the kernel has WireGuard, CAKE and netem. The
// supervisor then drives kernel WireGuard (it finds the module), the ISP
// links are netem delay lines and the router shapes with CAKE.

// vmTools are the host programs the lab and lifeline run in the guest.
var vmTools = []string{"ip", "tc", "nft", "ss", "nstat"}

// Markers around the guest's output files (a base64 tar on hvc0).
const (
	vmFilesBegin = "LIFELINE-LAB-FILES-BEGIN"
	vmFilesEnd   = "LIFELINE-LAB-FILES-END"
)

func cmdVM(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("vm", stderr)
	binDir := fs.String("bin-dir", "build/vmbin", "static (CGO_ENABLED=0) lifeline and lifeline-lab for the guest")
	kernel := fs.String("kernel", "", "bzImage to boot (default: board/amd64/vmlinuz)")
	mem := fs.Int("mem", 2048, "guest memory, MiB")
	cpus := fs.Int("cpus", 2, "guest vCPUs")
	timeout := fs.Duration("timeout", 60*time.Minute, "bound on the whole VM run")
	vclock := fs.Bool("virtual-clock", true, "under TCG, run the guest on a virtual clock (qemu -icount): host load slows the run but does not show up as delay")
	shift := fs.Int("clock-shift", 1, "with --virtual-clock: each guest instruction is 2^shift ns (1: a 500 MIPS guest)")
	plain := fs.Bool("plain", false, "do not add --netem --cake to the command (run it as on the host)")
	var extra []string
	fs.Func("tool", "extra host program to copy into the guest (repeatable)", func(v string) error { extra = append(extra, v); return nil })
	shell := fs.String("script", "", "run this shell script in the guest instead of a lab command (debugging; /lab holds the binaries)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("vm: %w", err)
	}
	rest := fs.Args()
	if *shell != "" {
		b, err := os.ReadFile(*shell)
		if err != nil {
			return fmt.Errorf("--script: %w", err)
		}
		rest = []string{"script", string(b)}
	}
	if len(rest) == 0 {
		return errors.New("vm: want a lab command after the flags, e.g. `lifeline-lab vm -- failover --scenario cut`")
	}
	switch rest[0] {
	case "failover", "bench", "demo", "reinjection", "script":
	default:
		return fmt.Errorf("vm: command %q: want failover, bench, demo or reinjection", rest[0])
	}
	bins := map[string]string{}
	for _, b := range []string{"lifeline", "lifeline-lab"} {
		p, err := filepath.Abs(filepath.Join(*binDir, b))
		if err != nil {
			return err
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("--bin-dir: %w (build them with `make vmbin`)", err)
		}
		bins[b] = p
	}
	cmd := []string{"/lab/lifeline-lab", rest[0], "--lifeline", "/lab/lifeline"}
	if !*plain {
		cmd = append(cmd, "--netem", "--cake")
	}
	cmd = append(cmd, rest[1:]...)
	quoted := make([]string, len(cmd))
	for i, a := range cmd {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	// Relative --out paths land under /out in the guest and come back to
	// the same relative paths here.
	run := strings.Join(quoted, " ")
	if rest[0] == "script" {
		run = rest[1]
	}
	// The CPU model decides what the guest's crypto costs. On the virtual
	// clock the guest's time advances per instruction executed, whatever
	// the instruction: with "max" (AVX2) the kernel's ChaCha20-Poly1305
	// needs a fraction of the instructions of qemu64's generic code, and
	// one kernel WireGuard tunnel carried 261 Mbit/s of guest time
	// (lab/testdata/vm-wg-iperf.sh). On the real-time clock host time is
	// what counts, TCG's AVX2 emulation is slow, and qemu64 ran WireGuard
	// no slower and veth TCP faster (30-87 Mbit/s through one tunnel).
	// LIFELINE_QEMU_CPU still wins.
	if os.Getenv("LIFELINE_QEMU_CPU") == "" {
		os.Setenv("LIFELINE_QEMU_CPU", vmCPUModel(*vclock))
	}
	accel, why := vmtest.Accel()
	env := fmt.Sprintf("export GOMAXPROCS=${GOMAXPROCS:-%d}\n", guestGOMAXPROCS) + fmt.Sprintf("export LIFELINE_VM_ACCEL='%s (cpu %s): %s'\n", accel, os.Getenv("LIFELINE_QEMU_CPU"), strings.ReplaceAll(why, "'", ""))
	script := env + "mkdir -p /out && cd /out\n" +
		run + "\nrc=$?\n" +
		"echo " + vmFilesBegin + "\n" +
		"tar cf - . | gzip -c | base64\n" +
		"echo " + vmFilesEnd + "\n" +
		"exit $rc\n"
	clock := "real-time clock"
	if *vclock && accel == "tcg" {
		clock = fmt.Sprintf("virtual clock, icount shift %d", *shift)
		accel += fmt.Sprintf(" with a %s", clock)
	}
	fmt.Fprintf(stderr, "vm: booting %s (%s: %s), %d vCPUs, %d MiB, %s\n", orDefault(*kernel, "board kernel"), accel, why, *cpus, *mem, clock)
	res, err := vmtest.Run(ctx, vmtest.Options{
		Kernel:   *kernel,
		Files:    map[string]string{"/lab/lifeline": bins["lifeline"], "/lab/lifeline-lab": bins["lifeline-lab"]},
		Tools:    append(append([]string{}, vmTools...), extra...),
		Script:   script,
		Timeout:  *timeout,
		MemoryMB: *mem,
		CPUs:     *cpus,

		VirtualClock:      *vclock,
		VirtualClockShift: *shift,
		Output:            &vmFilter{w: stdout},
	})
	if err != nil {
		if res != nil {
			fmt.Fprintf(stderr, "vm: serial console (last lines):\n%s\n", vmtest.LastLines(res.Console, 40))
		}
		return fmt.Errorf("vm: %w", err)
	}
	files, ferr := extractVMFiles(res.Output, ".")
	for _, f := range files {
		fmt.Fprintf(stderr, "vm: wrote %s\n", f)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("vm: lifeline-lab %s exited %d in the guest", rest[0], res.ExitCode)
	}
	return ferr
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// vmFilter passes the guest's output through live, except the base64 file
// block.
type vmFilter struct {
	w       io.Writer
	buf     bytes.Buffer
	inFiles bool
}

func (f *vmFilter) Write(p []byte) (int, error) {
	f.buf.Write(p)
	for {
		i := bytes.IndexByte(f.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(f.buf.Next(i + 1))
		switch strings.TrimSpace(line) {
		case vmFilesBegin:
			f.inFiles = true
			continue
		case vmFilesEnd:
			f.inFiles = false
			continue
		}
		if !f.inFiles {
			io.WriteString(f.w, line)
		}
	}
}

// extractVMFiles writes the regular files of the guest's tar block under
// dir and returns their paths. Paths that would leave dir are refused.
func extractVMFiles(output, dir string) ([]string, error) {
	i := strings.Index(output, vmFilesBegin)
	j := strings.LastIndex(output, vmFilesEnd)
	if i < 0 || j < i {
		return nil, errors.New("vm: the guest's output has no file block")
	}
	b64 := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' {
			return -1
		}
		return r
	}, output[i+len(vmFilesBegin):j])
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("vm: file block: %w", err)
	}
	// gzip'ed in the guest: the console lost lines of a 1 MB block once.
	if len(raw) > 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("vm: file block: %w", err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("vm: file block: %w", err)
		}
	}
	var files []string
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return files, fmt.Errorf("vm: file block: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return files, fmt.Errorf("vm: file block: path %q leaves the output directory", h.Name)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return files, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return files, fmt.Errorf("vm: file block: %s: %w", h.Name, err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return files, err
		}
		files = append(files, dst)
	}
}

// guestGOMAXPROCS is the guest programs' GOMAXPROCS: under TCG an idle Go
// scheduler's spinning threads and timers cost emulated CPU that the
// tunnels' crypto needs.
const guestGOMAXPROCS = 1

// vmCPUModel is the guest's CPU model: "max" on the virtual clock, where
// instructions are the currency, qemu64 on the real-time clock, where host
// time is (see cmdVM).
func vmCPUModel(virtualClock bool) string {
	if virtualClock {
		return "max"
	}
	return "qemu64"
}
