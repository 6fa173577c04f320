package at

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Errors a command can end with. Modem-reported failures are *Error values.
var (
	// ErrTimeout: no final result code within the command's timeout.
	ErrTimeout = errors.New("no final result code before the timeout")
	// ErrReset: the modem announced a restart ("RDY", "+PBREADY", ...)
	// while the command was in flight; its answer will never come.
	ErrReset = errors.New("modem restarted during the command")
	// ErrClosed: the port was closed or vanished.
	ErrClosed = errors.New("port closed")
)

// Error is a final result code that reports failure.
type Error struct {
	// Code is the whole final line: "ERROR", "+CME ERROR: 10",
	// "+CME ERROR: SIM not inserted", "COMMAND NOT SUPPORT", "NO CARRIER".
	Code string
}

func (e *Error) Error() string { return e.Code }

// CME returns the +CME ERROR argument (numeric or textual) and whether the
// error is one.
func (e *Error) CME() (string, bool) {
	if s, ok := strings.CutPrefix(e.Code, "+CME ERROR:"); ok {
		return strings.TrimSpace(s), true
	}
	return "", false
}

// URC is one unsolicited line.
type URC struct {
	Line string
	Time time.Time
}

// Options configure a Port.
type Options struct {
	// URCPrefixes are the line prefixes that are unsolicited unless they
	// answer the command in flight (AT+CPIN? is answered by "+CPIN: READY",
	// which after a reset also arrives unasked).
	URCPrefixes []string
	// ResetLines announce a modem restart; they fail the command in flight
	// with ErrReset (and are also delivered as URCs).
	ResetLines []string
	// URCBuffer is the URC channel's capacity; in a flood, URCs past it are
	// dropped and counted rather than stalling the reader.
	URCBuffer int
	// SyncTimeout bounds the resynchronisation after a timeout.
	SyncTimeout time.Duration
	// Logf, when set, receives diagnostics (discarded stale lines, drops).
	Logf func(format string, args ...any)
}

// DefaultURCPrefixes covers 3GPP and the vendor URCs of the families we
// drive. A line that starts with the in-flight command's name is its reply
// even when listed here.
var DefaultURCPrefixes = []string{
	"RDY", "+CPIN:", "+CFUN:", "+QUSIM:", "+QIND:", "+CGEV:", "+CREG:", "+CEREG:", "+CGREG:", "+C5GREG:",
	"+QNETDEVSTATUS:", "POWERED DOWN", "+PBREADY", "+SIMCARD:", "SMS DONE", "PB DONE", "+CRING:", "RING",
	"+CMTI:", "+CDSI:", "+QSTAT", "+GTSIMIND:", "!PCINFO:", "+QCRMCALL:", "$QCRMCALL:", "+CUSD:",
	"+CTZV:", "+CTZE:", "+NITZ:", "+QNWINFO:", "+STIN:", "+SIMREADY", "+QNETDEVCTL:",
}

// DefaultResetLines are the first lines modems print after a restart.
var DefaultResetLines = []string{"RDY", "+PBREADY", "+SIMREADY", "POWERED DOWN"}

// Port runs AT commands over one open port, one at a time.
type Port struct {
	rw   io.ReadWriteCloser
	opts Options

	cmdMu sync.Mutex // serialises Command

	mu       sync.Mutex // guards the fields below
	cur      *pending
	dirty    bool // a command timed out: resync before the next one
	err      error
	dropped  int
	stale    int
	overlong int

	urcs   chan URC
	closed chan struct{}
	once   sync.Once
}

type pending struct {
	echo   string // "AT"+cmd, upper case
	name   string // "+CSQ" for "+CSQ?"; reply lines starting with it are not URCs
	lines  chan string
	reset  chan struct{}
	resync bool // accept every non-URC line
}

// NewPort starts reading from rw. Close stops it.
func NewPort(rw io.ReadWriteCloser, opts Options) *Port {
	if opts.URCPrefixes == nil {
		opts.URCPrefixes = DefaultURCPrefixes
	}
	if opts.ResetLines == nil {
		opts.ResetLines = DefaultResetLines
	}
	if opts.URCBuffer <= 0 {
		opts.URCBuffer = 256
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 3 * time.Second
	}
	p := &Port{rw: rw, opts: opts, urcs: make(chan URC, opts.URCBuffer), closed: make(chan struct{})}
	go p.readLoop()
	return p
}

// URCs delivers unsolicited lines. It is never closed; watch Done.
func (p *Port) URCs() <-chan URC { return p.urcs }

// Done is closed when the port stops (Close, or a read error: the device
// vanished).
func (p *Port) Done() <-chan struct{} { return p.closed }

// Err returns why the port stopped, nil while it runs.
func (p *Port) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stats reports lines dropped: URCs lost in a flood, stale replies discarded
// while no command was in flight, and overlong lines.
func (p *Port) Stats() (droppedURCs, staleLines, overlong int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped, p.stale, p.overlong
}

// Close closes the underlying port and fails any command in flight.
func (p *Port) Close() error {
	err := p.rw.Close()
	p.stop(ErrClosed)
	return err
}

func (p *Port) stop(err error) {
	p.once.Do(func() {
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.closed)
	})
}

func (p *Port) logf(format string, args ...any) {
	if p.opts.Logf != nil {
		p.opts.Logf(format, args...)
	}
}

func (p *Port) readLoop() {
	lr := NewLineReader(p.rw)
	lr.OnOverlong = func() {
		p.mu.Lock()
		p.overlong++
		p.mu.Unlock()
		p.logf("at: dropped a line longer than %d bytes", MaxLine)
	}
	for {
		line, err := lr.Next()
		if err != nil {
			p.rw.Close()
			p.stop(fmt.Errorf("%w: read: %v", ErrClosed, err))
			return
		}
		p.dispatch(line)
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, pre := range prefixes {
		if strings.HasPrefix(s, pre) {
			return true
		}
	}
	return false
}

func (p *Port) dispatch(line string) {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()

	upper := strings.ToUpper(line)
	// Echo, possibly fused to the tail of an interrupted line ("RDATE0Q0V1"
	// is "RDY" cut short by the echo of "ATE0Q0V1").
	if cur != nil && cur.echo != "" && strings.HasSuffix(upper, cur.echo) {
		if prefix := line[:len(line)-len(cur.echo)]; prefix != "" && hasAnyPrefix("RDY", []string{prefix}) {
			// The modem restarted, then took our command (it echoed
			// it): tell the watcher, but the answer is still coming.
			p.deliverURC("RDY")
		}
		return
	}
	isReply := cur != nil && cur.name != "" && strings.HasPrefix(upper, strings.ToUpper(cur.name)+":")
	if !isReply && hasAnyPrefix(line, p.opts.URCPrefixes) {
		p.deliverURC(line)
		if hasAnyPrefix(line, p.opts.ResetLines) && cur != nil {
			p.resetCur(cur)
		}
		return
	}
	if cur == nil {
		// Stale: a late reply to a timed-out command, or noise. Nobody
		// asked; dropping it is what keeps it from answering the next one.
		p.mu.Lock()
		p.stale++
		p.mu.Unlock()
		p.logf("at: discarded unsolicited line %q", line)
		return
	}
	select {
	case cur.lines <- line:
	default:
		// A reply of thousands of lines is a runaway; drop the excess.
		p.logf("at: reply to %s too long, dropped %q", cur.echo, line)
	}
}

func (p *Port) resetCur(cur *pending) {
	select {
	case <-cur.reset:
	default:
		close(cur.reset)
	}
}

func (p *Port) deliverURC(line string) {
	select {
	case p.urcs <- URC{Line: line, Time: time.Now()}:
	default:
		p.mu.Lock()
		p.dropped++
		p.mu.Unlock()
	}
}

// finalResult classifies a final result code.
func finalResult(line string) (done bool, err error) {
	switch {
	case line == "OK":
		return true, nil
	case strings.HasPrefix(line, "CONNECT"):
		// Some data-call commands (Fibocom, SIMCom) end with CONNECT
		// instead of OK; the dial-only rule of the library is wrong here.
		return true, nil
	case line == "ERROR", strings.HasPrefix(line, "+CME ERROR:"), strings.HasPrefix(line, "+CMS ERROR:"),
		line == "COMMAND NOT SUPPORT", line == "NO CARRIER", line == "BUSY", line == "NO ANSWER",
		line == "NO DIALTONE", line == "ABORTED", line == "+CME ERROR", line == "TOO MANY PARAMETERS":
		return true, &Error{Code: line}
	}
	return false, nil
}

// CommandError wraps a failed command with its text.
type CommandError struct {
	Cmd string // without "AT"
	Err error
}

func (e *CommandError) Error() string { return fmt.Sprintf("AT%s: %v", e.Cmd, e.Err) }
func (e *CommandError) Unwrap() error { return e.Err }

// Command sends "AT"+cmd and returns the information lines of the reply.
// The timeout is the command's own (AT+COPS=? takes minutes, AT+CSQ a few
// milliseconds); ctx can end it sooner.
func (p *Port) Command(ctx context.Context, cmd string, timeout time.Duration) ([]string, error) {
	p.cmdMu.Lock()
	defer p.cmdMu.Unlock()
	p.mu.Lock()
	dirty := p.dirty
	p.mu.Unlock()
	if dirty {
		if err := p.resync(ctx); err != nil {
			return nil, &CommandError{Cmd: cmd, Err: fmt.Errorf("resync after an earlier timeout: %w", err)}
		}
	}
	info, err := p.run(ctx, cmd, timeout, false)
	if err != nil {
		return info, &CommandError{Cmd: cmd, Err: err}
	}
	return info, nil
}

func cmdName(cmd string) string {
	name := cmd
	if i := strings.IndexAny(name, "=?"); i >= 0 {
		name = name[:i]
	}
	if name == "" || (name[0] != '+' && name[0] != '$' && name[0] != '!' && name[0] != '^' && name[0] != '#' && name[0] != '%') {
		return "" // basic command (E0, Z, I): no named reply
	}
	return name
}

func (p *Port) run(ctx context.Context, cmd string, timeout time.Duration, resync bool) ([]string, error) {
	cur := &pending{
		echo:   strings.ToUpper("AT" + cmd),
		name:   cmdName(cmd),
		lines:  make(chan string, 4096),
		reset:  make(chan struct{}),
		resync: resync,
	}
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return nil, err
	}
	p.cur = cur
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cur = nil
		p.mu.Unlock()
	}()

	if _, err := p.rw.Write([]byte("AT" + cmd + "\r")); err != nil {
		p.stop(fmt.Errorf("%w: write: %v", ErrClosed, err))
		return nil, fmt.Errorf("write: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	var info []string
	for {
		select {
		case line := <-cur.lines:
			done, err := finalResult(line)
			if done {
				return info, err
			}
			info = append(info, line)
		case <-cur.reset:
			return info, ErrReset
		case <-t.C:
			p.mu.Lock()
			p.dirty = true
			p.mu.Unlock()
			return info, fmt.Errorf("%w (%v)", ErrTimeout, timeout)
		case <-ctx.Done():
			p.mu.Lock()
			p.dirty = true
			p.mu.Unlock()
			return info, ctx.Err()
		case <-p.closed:
			return info, p.Err()
		}
	}
}

// resync makes sure no reply to an earlier command is still on its way. It
// turns echo on and sends ATE0: the echo "ATE0" is a marker in the stream,
// and the modem answers in order, so whatever arrives before it (a late OK,
// the answer to ATE1) belongs to the past and is discarded; the OK after it
// is ATE0's. It leaves echo off, as the dialogue reset does.
func (p *Port) resync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.SyncTimeout)
	defer cancel()
	cur := &pending{lines: make(chan string, 4096), reset: make(chan struct{}), resync: true}
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return err
	}
	p.cur = cur
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cur = nil
		p.mu.Unlock()
	}()
	if _, err := p.rw.Write([]byte("ATE1\r")); err != nil {
		return fmt.Errorf("write ATE1: %w", err)
	}
	// Let ATE1 take effect before the marker is sent, so the marker is
	// echoed. Any lines meanwhile are stale.
	settle := time.NewTimer(100 * time.Millisecond)
	defer settle.Stop()
	sawOK := false
wait:
	for {
		select {
		case l := <-cur.lines:
			if l == "OK" {
				sawOK = true
			}
		case <-settle.C:
			if sawOK {
				break wait
			}
			settle.Reset(100 * time.Millisecond)
		case <-ctx.Done():
			return fmt.Errorf("no answer to ATE1 within %v", p.opts.SyncTimeout)
		case <-p.closed:
			return p.Err()
		}
	}
	if _, err := p.rw.Write([]byte("ATE0\r")); err != nil {
		return fmt.Errorf("write ATE0: %w", err)
	}
	marker := false
	for {
		select {
		case l := <-cur.lines:
			switch {
			case strings.HasSuffix(strings.ToUpper(l), "ATE0"):
				marker = true
			case marker:
				if done, err := finalResult(l); done {
					if err != nil {
						return fmt.Errorf("ATE0: %w", err)
					}
					p.mu.Lock()
					p.dirty = false
					p.mu.Unlock()
					return nil
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("no echo of ATE0 within %v", p.opts.SyncTimeout)
		case <-p.closed:
			return p.Err()
		}
	}
}
