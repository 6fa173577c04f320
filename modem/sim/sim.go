package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/lifeline-router/lifeline/modem/at"
)

// Options configure a Sim.
type Options struct {
	// PortLink, when set, is a symlink kept pointing at the current pty
	// slave (it changes when the port vanishes and comes back).
	PortLink string
	// LinkUp and LinkDown run when the data call goes up and down (in the
	// lab: `ip link set wwan0 up/down`).
	LinkUp, LinkDown func() error
	// OnPath is called with every new slave path.
	OnPath func(path string)
	Logf   func(format string, args ...any)
}

// Sim is a running simulated modem.
type Sim struct {
	prof *Profile
	opts Options

	mu      sync.Mutex
	vars    map[string]string
	echo    bool
	path    string
	master  *os.File
	slave   *os.File
	silent  time.Time // drop output until then
	late    bool
	held    []string
	events  []string
	cmds    chan string
	pathCh  chan struct{} // closed and replaced on every path change
	vanish  chan time.Duration
	started time.Time
	done    <-chan struct{}
}

// Start creates the pty and serves the profile until ctx ends.
func Start(ctx context.Context, prof *Profile, opts Options) (*Sim, error) {
	s := &Sim{prof: prof, opts: opts, echo: prof.Echo, pathCh: make(chan struct{}), vanish: make(chan time.Duration, 1), cmds: make(chan string, 64)}
	s.vars = copyVars(prof.Vars)
	s.done = ctx.Done()
	if err := s.openPTY(); err != nil {
		return nil, err
	}
	s.started = time.Now()
	go s.processLoop(ctx)
	go s.scheduleLoop(ctx)
	go s.lifecycle(ctx)
	return s, nil
}

func copyVars(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Sim) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// Path is the current slave path.
func (s *Sim) Path() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.path
}

// PathChanged is closed when the path changes (vanish and return).
func (s *Sim) PathChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pathCh
}

// Events lists what the sim did ("cmd AT+CSQ", "data_up", "reset",
// "vanish", ...), for assertions.
func (s *Sim) Events() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events...)
}

// Var reads a profile variable.
func (s *Sim) Var(k string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vars[k]
}

func (s *Sim) event(e string) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	s.logf("sim: %s", e)
}

func (s *Sim) openPTY() error {
	m, sl, err := pty.Open()
	if err != nil {
		return fmt.Errorf("pty.Open: %w", err)
	}
	if err := at.SetRaw(int(sl.Fd())); err != nil {
		m.Close()
		sl.Close()
		return fmt.Errorf("raw mode on %s: %w", sl.Name(), err)
	}
	// A blocking master cannot be closed under a pending Read (the close
	// waits for the read), so "vanish" would never reach the driver, and
	// write deadlines would not work. Re-wrap it non-blocking so the
	// runtime poller owns it.
	fd, err := unix.Dup(int(m.Fd()))
	m.Close()
	if err != nil {
		sl.Close()
		return fmt.Errorf("dup ptmx: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		sl.Close()
		return fmt.Errorf("set ptmx non-blocking: %w", err)
	}
	m = os.NewFile(uintptr(fd), "/dev/ptmx")
	s.mu.Lock()
	s.master, s.slave, s.path = m, sl, sl.Name()
	close(s.pathCh)
	s.pathCh = make(chan struct{})
	s.mu.Unlock()
	if s.opts.PortLink != "" {
		tmp := s.opts.PortLink + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(sl.Name(), tmp); err != nil {
			return fmt.Errorf("symlink(%s): %w", tmp, err)
		}
		if err := os.Rename(tmp, s.opts.PortLink); err != nil {
			return fmt.Errorf("rename(%s, %s): %w", tmp, s.opts.PortLink, err)
		}
	}
	if s.opts.OnPath != nil {
		s.opts.OnPath(sl.Name())
	}
	go s.readLoop(m)
	return nil
}

func (s *Sim) closePTY() {
	s.mu.Lock()
	m, sl := s.master, s.slave
	s.master, s.slave = nil, nil
	s.mu.Unlock()
	if m != nil {
		m.Close()
	}
	if sl != nil {
		sl.Close()
	}
}

// lifecycle handles vanish faults and shutdown.
func (s *Sim) lifecycle(ctx context.Context) {
	defer func() {
		s.closePTY()
		if s.opts.PortLink != "" {
			os.Remove(s.opts.PortLink)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-s.vanish:
			s.event("vanish")
			s.closePTY()
			s.resetState()
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			if err := s.openPTY(); err != nil {
				s.logf("sim: re-create pty: %v", err)
				return
			}
			s.event("return " + s.Path())
			s.emit(s.prof.Boot...)
		}
	}
}

// readLoop splits what the host writes into command lines at CR.
func (s *Sim) readLoop(m *os.File) {
	var line []byte
	buf := make([]byte, 1024)
	for {
		n, err := m.Read(buf)
		for _, c := range buf[:n] {
			switch c {
			case '\r':
				if len(line) > 0 {
					select {
					case s.cmds <- string(line):
					case <-s.done:
						return
					}
				}
				line = line[:0]
			case '\n', 0:
			default:
				if len(line) < 4096 {
					line = append(line, c)
				}
			}
		}
		if err != nil {
			return
		}
	}
}

var basicRe = regexp.MustCompile(`^AT(?:[EQVX][0-9]?|Z|&F|&W)*$`)

func (s *Sim) processLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case cmd := <-s.cmds:
			s.handle(ctx, cmd)
		}
	}
}

func (s *Sim) handle(ctx context.Context, cmd string) {
	s.mu.Lock()
	echo := s.echo
	s.mu.Unlock()
	if echo {
		s.write(cmd + "\r")
	}
	s.event("cmd " + cmd)
	up := strings.ToUpper(cmd)
	rule := s.match(up)
	if rule == nil {
		if basicRe.MatchString(up) {
			if i := strings.Index(up, "E"); i >= 0 && i+1 < len(up) {
				s.mu.Lock()
				s.echo = up[i+1] == '1'
				s.mu.Unlock()
			}
			if strings.Contains(up, "Z") || strings.Contains(up, "&F") {
				s.mu.Lock()
				s.echo = s.prof.Echo
				s.mu.Unlock()
			}
			s.emit("OK")
			return
		}
		s.emit(s.prof.Unknown...)
		return
	}
	if rule.Delay > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(rule.Delay)):
		}
	}
	s.emit(rule.Reply...)
	s.mu.Lock()
	for k, v := range rule.Set {
		s.vars[k] = v
	}
	s.mu.Unlock()
	s.act(ctx, rule.Action)
}

func (s *Sim) match(up string) *Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.prof.Commands {
		c := &s.prof.Commands[i]
		pat := strings.ToUpper(c.Cmd)
		ok := up == pat
		if p, glob := strings.CutSuffix(pat, "*"); glob {
			ok = strings.HasPrefix(up, p)
		}
		if !ok {
			continue
		}
		for k, v := range c.When {
			if s.vars[k] != v {
				ok = false
			}
		}
		if ok {
			return c
		}
	}
	return nil
}

func (s *Sim) act(ctx context.Context, action string) {
	switch action {
	case "data_up":
		s.mu.Lock()
		was := s.vars["data"]
		s.vars["data"], s.vars["ip"] = "1", s.prof.DataIP
		s.mu.Unlock()
		s.event("data_up")
		if was != "1" && s.opts.LinkUp != nil {
			if err := s.opts.LinkUp(); err != nil {
				s.logf("sim: link up hook: %v", err)
			}
		}
	case "data_down":
		s.dataDown()
	case "reset":
		s.reset(ctx)
	}
}

func (s *Sim) dataDown() {
	s.mu.Lock()
	was := s.vars["data"]
	s.vars["data"], s.vars["ip"] = "0", "0.0.0.0"
	s.mu.Unlock()
	s.event("data_down")
	if was == "1" && s.opts.LinkDown != nil {
		if err := s.opts.LinkDown(); err != nil {
			s.logf("sim: link down hook: %v", err)
		}
	}
}

func (s *Sim) resetState() {
	s.dataDown()
	s.mu.Lock()
	s.vars = copyVars(s.prof.Vars)
	s.echo = s.prof.Echo
	s.mu.Unlock()
}

func (s *Sim) reset(ctx context.Context) {
	s.event("reset")
	s.resetState()
	select {
	case <-ctx.Done():
		return
	case <-time.After(50 * time.Millisecond):
	}
	s.emit(s.prof.Boot...)
}

var varRe = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`)

// emit sends lines as a modem does with V1: "\r\nLINE\r\n".
func (s *Sim) emit(lines ...string) {
	if len(lines) == 0 {
		return
	}
	var b strings.Builder
	s.mu.Lock()
	for _, l := range lines {
		l = varRe.ReplaceAllStringFunc(l, func(m string) string { return s.vars[m[2:len(m)-1]] })
		b.WriteString("\r\n" + l + "\r\n")
	}
	s.mu.Unlock()
	s.write(b.String())
}

// write sends raw bytes unless the modem is silent. A pty whose slave
// nobody reads fills up; the deadline drops output then instead of hanging.
func (s *Sim) write(data string) {
	s.mu.Lock()
	if time.Now().Before(s.silent) {
		if s.late {
			s.held = append(s.held, data)
		}
		s.mu.Unlock()
		return
	}
	m := s.master
	s.mu.Unlock()
	if m == nil {
		return
	}
	_ = m.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := m.Write([]byte(data)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		s.logf("sim: write: %v", err)
	}
}

// Inject runs one event now (tests use it to place faults exactly).
func (s *Sim) Inject(ctx context.Context, e Event) {
	for k, v := range e.Set {
		s.mu.Lock()
		s.vars[k] = v
		s.mu.Unlock()
		s.event("set " + k + "=" + v)
	}
	n := e.Repeat
	if n <= 0 {
		n = 1
	}
	if len(e.URC) > 0 {
		for i := 0; i < n; i++ {
			s.emit(e.URC...)
		}
		s.event("urc " + strings.Join(e.URC, " | "))
	}
	if e.Action != "" {
		s.act(ctx, e.Action)
	}
	switch e.Fault {
	case "reset":
		s.reset(ctx)
	case "silence":
		s.event("silence")
		s.mu.Lock()
		s.silent, s.late, s.held = time.Now().Add(time.Duration(e.For)), e.Late, nil
		s.mu.Unlock()
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(e.For)):
			}
			s.mu.Lock()
			held := s.held
			s.held = nil
			s.silent = time.Time{}
			s.mu.Unlock()
			s.event("speak")
			for _, h := range held {
				s.write(h)
			}
		}()
	case "garbage":
		s.event("garbage")
		s.write(e.Data)
	case "vanish":
		select {
		case s.vanish <- time.Duration(e.For):
		default:
		}
	}
}

func (s *Sim) scheduleLoop(ctx context.Context) {
	if len(s.prof.Schedule) == 0 {
		return
	}
	evs := append([]Event(nil), s.prof.Schedule...)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].At < evs[j].At })
	for {
		start := time.Now()
		for _, e := range evs {
			wait := time.Until(start.Add(time.Duration(e.At)))
			if wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			s.Inject(ctx, e)
		}
		if s.prof.Repeat <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(time.Duration(s.prof.Repeat)))):
		}
	}
}
