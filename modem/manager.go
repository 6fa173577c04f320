package modem

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-router/lifeline/modem/at"
)

// Link is the side effect of the data call on the host: wwan0 up with an
// address, or down. The lab implements it with ip(8) in a netns, the image
// with netlink and DHCP; Manager does not care which.
type Link interface {
	// Up brings wwan0 up. ipv4 is the address the modem reported (a /32
	// on raw-IP links); invalid means the modem serves DHCP.
	Up(ctx context.Context, ipv4 netip.Prefix) error
	Down(ctx context.Context) error
}

// NopLink does nothing (for `modem connect` and tests).
type NopLink struct{}

func (NopLink) Up(context.Context, netip.Prefix) error { return nil }
func (NopLink) Down(context.Context) error             { return nil }

// ExecLink runs commands; "{prefix}" in Up's arguments becomes the address
// ("dhcp" when the modem serves DHCP).
type ExecLink struct{ UpCmd, DownCmd []string }

func (l ExecLink) Up(ctx context.Context, p netip.Prefix) error {
	s := "dhcp"
	if p.IsValid() {
		s = p.String()
	}
	return runCmd(ctx, l.UpCmd, s)
}

func (l ExecLink) Down(ctx context.Context) error { return runCmd(ctx, l.DownCmd, "") }

func runCmd(ctx context.Context, argv []string, prefix string) error {
	if len(argv) == 0 {
		return nil
	}
	args := make([]string, len(argv))
	for i, a := range argv {
		args[i] = strings.ReplaceAll(a, "{prefix}", prefix)
	}
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Config configures a Manager.
type Config struct {
	// Port is the AT port: a path, a symlink (re-resolved on every open)
	// or a glob such as /dev/serial/by-id/usb-Quectel*-if02-port0; after a
	// USB re-enumeration the modem may come back under another name.
	Port string
	PIN  string
	Data DataConfig
	Link Link
	// PollInterval is the backstop poll of signal, registration and data
	// state (default 10 s).
	PollInterval time.Duration
	// RegisterTimeout bounds the wait for registration before a retry
	// (default 120 s).
	RegisterTimeout time.Duration
	// MinBackoff, MaxBackoff bound the retry delay, doubled per failure
	// (defaults 1 s and 60 s).
	MinBackoff, MaxBackoff time.Duration
	Logf                   func(format string, args ...any)
}

// Manager states.
const (
	StateOpening     = "opening"
	StateInit        = "initializing"
	StateSIM         = "sim"
	StateRegistering = "registering"
	StateConnecting  = "connecting"
	StateConnected   = "connected"
	StateBackoff     = "backoff"
	StatePortLost    = "port_lost"
)

// Status is the Manager's view, for metrics and `lifeline status`.
type Status struct {
	Info
	State string `json:"state"`
	Port  string `json:"port"`
	// Reconnects counts data calls re-established after a loss (URC,
	// failed poll, modem reset or port loss).
	Reconnects uint64    `json:"reconnects"`
	LastError  string    `json:"last_error,omitempty"`
	Updated    time.Time `json:"updated"`
}

// Manager owns the modem port and keeps the data call up.
type Manager struct {
	cfg Config

	mu      sync.Mutex
	st      Status
	everUp  bool
	since   time.Time // only run from the Run goroutine
	lostSet bool      // the call was up and got lost; count the next success
}

// NewManager returns a Manager; Run starts it.
func NewManager(cfg Config) *Manager {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 10 * time.Second
	}
	if cfg.RegisterTimeout <= 0 {
		cfg.RegisterTimeout = 120 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 60 * time.Second
		if cfg.MaxBackoff < cfg.MinBackoff {
			cfg.MaxBackoff = cfg.MinBackoff
		}
	}
	if cfg.Link == nil {
		cfg.Link = NopLink{}
	}
	if cfg.Data.CID == 0 {
		cfg.Data.CID = 1
	}
	return &Manager{cfg: cfg, st: Status{State: StateOpening}}
}

// Status returns a snapshot.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

func (m *Manager) logf(format string, args ...any) {
	if m.cfg.Logf != nil {
		m.cfg.Logf(format, args...)
	}
}

func (m *Manager) update(f func(s *Status)) {
	m.mu.Lock()
	f(&m.st)
	m.st.Updated = time.Now()
	m.mu.Unlock()
}

func (m *Manager) setState(s string) { m.update(func(st *Status) { st.State = s }) }

func (m *Manager) setErr(err error) {
	if err == nil {
		return
	}
	m.logf("modem: %v", err)
	m.update(func(st *Status) { st.LastError = err.Error() })
}

type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else if b.cur *= 2; b.cur > b.max {
		b.cur = b.max
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// resolvePort expands a glob or symlink to the device path.
func resolvePort(pattern string) (string, error) {
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return "", fmt.Errorf("port pattern %q: %w", pattern, err)
	}
	if len(matches) == 0 {
		return "", fmt.Errorf("port %s: no such device", pattern)
	}
	sort.Strings(matches)
	p, err := filepath.EvalSymlinks(matches[0])
	if err != nil {
		return "", fmt.Errorf("port %s: %w", matches[0], err)
	}
	return p, nil
}

// Run keeps the modem and its data call up until ctx ends; it returns
// ctx's error. Failures are retried with exponential backoff and are
// visible in Status.
func (m *Manager) Run(ctx context.Context) error {
	bo := backoff{min: m.cfg.MinBackoff, max: m.cfg.MaxBackoff}
	for {
		err := m.session(ctx, &bo)
		m.linkDown()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.setErr(err)
		m.update(func(st *Status) {
			st.State = StatePortLost
			st.Data = DataState{}
		})
		if err := sleep(ctx, bo.next()); err != nil {
			return err
		}
	}
}

func (m *Manager) linkDown() {
	m.mu.Lock()
	up := m.st.Data.Connected || m.st.State == StateConnected
	m.mu.Unlock()
	if !up {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.cfg.Link.Down(ctx); err != nil {
		m.setErr(fmt.Errorf("link down: %w", err))
	}
	m.mu.Lock()
	if m.everUp {
		m.lostSet = true
	}
	m.st.Data = DataState{}
	m.mu.Unlock()
}

var (
	errDataLost   = errors.New("data call lost")
	errModemReset = errors.New("modem restarted")
)

// session runs one open of the port: it returns when the port is lost.
func (m *Manager) session(ctx context.Context, bo *backoff) error {
	m.setState(StateOpening)
	path, err := resolvePort(m.cfg.Port)
	if err != nil {
		return err
	}
	c, err := OpenClient(path, m.cfg.Logf)
	if err != nil {
		return err
	}
	defer c.Close()
	m.update(func(st *Status) { st.Port = path })
	for {
		err := m.callOnce(ctx, c)
		m.linkDown()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-c.Port().Done():
			return fmt.Errorf("port %s: %w", path, c.Port().Err())
		default:
		}
		m.setErr(err)
		if errors.Is(err, errDataLost) || errors.Is(err, errModemReset) {
			// A loss after a good call retries at once, then backs off.
			if bo.cur == 0 {
				continue
			}
		}
		m.setState(StateBackoff)
		if err := sleep(ctx, bo.next()); err != nil {
			return err
		}
	}
}

// callOnce initialises the modem, brings the call up and watches it; it
// returns why the call ended.
func (m *Manager) callOnce(ctx context.Context, c *Client) error {
	// URCs queued before this attempt (the boot lines of the reset that
	// ended the last one) are history, not news.
	m.since = time.Now()
	m.setState(StateInit)
	if err := c.Init(ctx); err != nil {
		return err
	}
	id := c.Identity()
	m.update(func(st *Status) {
		st.Manufacturer, st.Model, st.Revision, st.IMEI = id.Manufacturer, id.Model, id.Revision, id.IMEI
	})
	m.setState(StateSIM)
	sim, err := c.SIM(ctx)
	if err != nil {
		return err
	}
	if sim == "pin_required" && m.cfg.PIN != "" {
		if err := c.UnlockSIM(ctx, m.cfg.PIN); err != nil {
			return fmt.Errorf("SIM PIN rejected: %w", err)
		}
		if sim, err = c.SIM(ctx); err != nil {
			return err
		}
	}
	m.update(func(st *Status) { st.SIM = sim })
	if sim != "ready" {
		return fmt.Errorf("SIM not usable: %s", sim)
	}
	m.setState(StateRegistering)
	deadline := time.Now().Add(m.cfg.RegisterTimeout)
	for {
		if err := m.refresh(ctx, c); err != nil {
			return err
		}
		if m.Status().Registered() {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not registered after %v: %s", m.cfg.RegisterTimeout, m.Status().Registration)
		}
		if err := m.drainWait(ctx, c, time.Second); err != nil {
			return err
		}
	}
	m.setState(StateConnecting)
	// A call left up by an earlier run (or a half-dead one after a NW
	// DEACT) makes the bring-up fail on some firmwares; clear it first.
	if ds, err := c.DataState(ctx, m.cfg.Data.CID); err == nil && ds.Connected {
		_ = c.Disconnect(ctx, m.cfg.Data.CID)
	}
	prefix, err := c.Connect(ctx, m.cfg.Data)
	if err != nil {
		return err
	}
	if err := m.cfg.Link.Up(ctx, prefix); err != nil {
		_ = c.Disconnect(ctx, m.cfg.Data.CID)
		return fmt.Errorf("link up %v: %w", prefix, err)
	}
	if err := m.refresh(ctx, c); err != nil {
		return err
	}
	m.mu.Lock()
	m.st.State = StateConnected
	m.st.Data.Connected = true
	if m.lostSet {
		m.st.Reconnects++
		m.lostSet = false
	}
	m.everUp = true
	m.st.LastError = ""
	m.mu.Unlock()
	m.logf("modem: data call up on %s (%s)", c.Family().Name, prefix)
	return m.watch(ctx, c)
}

// refresh polls everything Info holds.
func (m *Manager) refresh(ctx context.Context, c *Client) error {
	info, err := c.Info(ctx, m.cfg.Data.CID)
	if err != nil {
		return err
	}
	m.update(func(st *Status) { st.Info = info })
	return nil
}

// urcEvent classifies an unsolicited line.
func urcEvent(line string) error {
	u := strings.ToUpper(line)
	switch {
	case hasPrefixAny(u, at.DefaultResetLines):
		return errModemReset
	case strings.HasPrefix(u, "+CGEV:") && (strings.Contains(u, "DEACT") || strings.Contains(u, "DETACH")):
		return errDataLost
	case strings.HasPrefix(u, "+QNETDEVSTATUS:"):
		// +QNETDEVSTATUS: <cid>,<status> (older firmwares: <status>); 0 = down
		f := strings.Split(strings.TrimSpace(u[len("+QNETDEVSTATUS:"):]), ",")
		if strings.TrimSpace(f[len(f)-1]) == "0" {
			return errDataLost
		}
	case strings.HasPrefix(u, "+CPIN:") && !strings.Contains(u, "READY"):
		return errModemReset // SIM removed or reset: start over
	}
	return nil
}

func hasPrefixAny(s string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// drainWait waits d while watching URCs and the port.
func (m *Manager) drainWait(ctx context.Context, c *Client, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.Port().Done():
			return c.Port().Err()
		case u := <-c.Port().URCs():
			if u.Time.Before(m.since) {
				continue
			}
			if err := urcEvent(u.Line); errors.Is(err, errModemReset) {
				return fmt.Errorf("%w (%q)", err, u.Line)
			}
		case <-t.C:
			return nil
		}
	}
}

// watch polls and listens until the call is lost.
func (m *Manager) watch(ctx context.Context, c *Client) error {
	tick := time.NewTicker(m.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.Port().Done():
			return c.Port().Err()
		case u := <-c.Port().URCs():
			if u.Time.Before(m.since) {
				continue
			}
			if err := urcEvent(u.Line); err != nil {
				m.logf("modem: %q: %v", u.Line, err)
				return fmt.Errorf("%w (%q)", err, u.Line)
			}
		case <-tick.C:
			if err := m.refresh(ctx, c); err != nil {
				if errors.Is(err, at.ErrReset) {
					return fmt.Errorf("%w: %v", errModemReset, err)
				}
				return err
			}
			if !m.Status().Data.Connected {
				return fmt.Errorf("%w: poll shows no address on cid %d", errDataLost, m.cfg.Data.CID)
			}
		}
	}
}
