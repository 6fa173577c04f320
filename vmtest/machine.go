package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrKernelPanic is returned (wrapped) when the guest kernel panicked.
var ErrKernelPanic = errors.New("guest kernel panic")

// ErrTimeout is returned (wrapped) when the guest did not finish in time.
var ErrTimeout = errors.New("VM timed out")

// Machine is one running QEMU process whose serial console (ttyS0) is
// captured line by line.
type Machine struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed when QEMU has exited
	waitErr error

	mu      sync.Mutex
	console strings.Builder
	lines   []string
	changed chan struct{} // closed and replaced on every new line
	echo    io.Writer
}

// StartMachine starts QEMU with args (the accelerator arguments are
// prepended, the serial console is taken over: do not pass -serial). Every
// console line is also written to echo when it is non-nil.
func StartMachine(ctx context.Context, args []string, echo io.Writer) (*Machine, error) {
	accel := AccelArgs()
	if slices.Contains(args, "-icount") {
		// icount (a virtual clock) needs single-threaded TCG.
		for i, a := range accel {
			if a == "tcg,thread=multi" {
				accel[i] = "tcg,thread=single"
			}
		}
	}
	full := append(accel, "-display", "none", "-monitor", "none", "-serial", "stdio")
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, qemuBinary(), full...)
	cmd.WaitDelay = 2 * time.Second
	// A test binary killed by -timeout must not leave a VM running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("qemu StdoutPipe: %w", err)
	}
	cmd.Stderr = cmd.Stdout // QEMU's own errors belong next to the console
	m := &Machine{cmd: cmd, done: make(chan struct{}), changed: make(chan struct{}), echo: echo}
	m.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", qemuBinary(), err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			m.addLine(strings.TrimRight(sc.Text(), "\r"))
		}
		m.waitErr = cmd.Wait()
		close(m.done)
		m.mu.Lock()
		close(m.changed)
		m.changed = make(chan struct{})
		m.mu.Unlock()
	}()
	return m, nil
}

func (m *Machine) addLine(l string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.console.WriteString(l)
	m.console.WriteByte('\n')
	m.lines = append(m.lines, l)
	if m.echo != nil {
		fmt.Fprintf(m.echo, "[%6.2fs] %s\n", time.Since(m.started).Seconds(), l)
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// Console returns everything the serial console printed so far.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String()
}

// Started returns when QEMU was started.
func (m *Machine) Started() time.Time { return m.started }

// Done is closed when QEMU has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Wait waits for QEMU to exit and returns its exit error.
func (m *Machine) Wait() error {
	<-m.done
	return m.waitErr
}

// Kill stops QEMU.
func (m *Machine) Kill() {
	if m.cmd.Process != nil {
		m.cmd.Process.Kill()
	}
	<-m.done
}

// Mark returns the number of console lines so far, for WaitForLineAfter.
func (m *Machine) Mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.lines)
}

// WaitForLine waits until a console line contains substr and returns that
// line. It fails early with ErrKernelPanic when the kernel panics and with an
// error when QEMU exits, and with ErrTimeout when ctx expires.
func (m *Machine) WaitForLine(ctx context.Context, substr string) (string, error) {
	return m.WaitForLineAfter(ctx, 0, substr)
}

// WaitForLineAfter is WaitForLine considering only lines after mark (see
// Mark), e.g. the second boot's ready line.
func (m *Machine) WaitForLineAfter(ctx context.Context, mark int, substr string) (string, error) {
	seen := mark
	for {
		m.mu.Lock()
		lines := m.lines[seen:]
		seen = len(m.lines)
		changed := m.changed
		m.mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, substr) {
				return l, nil
			}
			if isPanic(l) {
				return "", fmt.Errorf("waiting for %q: %w: %s", substr, ErrKernelPanic, l)
			}
		}
		select {
		case <-changed:
		case <-m.done:
			m.mu.Lock()
			n := len(m.lines)
			m.mu.Unlock()
			if n > seen {
				continue
			}
			return "", fmt.Errorf("waiting for %q: qemu exited: %v", substr, m.waitErr)
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q after %v: %w", substr, time.Since(m.started).Round(time.Millisecond), ErrTimeout)
		}
	}
}

func isPanic(line string) bool {
	return strings.Contains(line, "Kernel panic - not syncing")
}

// PanicLine returns the console's kernel panic line, or "".
func (m *Machine) PanicLine() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.lines {
		if isPanic(l) {
			return l
		}
	}
	return ""
}
