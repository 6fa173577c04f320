package wifi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/ethernet"
)

// Options for one WiFi uplink.
type Options struct {
	Name      string // uplink name
	Interface string // e.g. wlan0
	Table     int    // the uplink's own routing table
	StateDir  string // DHCP lease file (see ethernet.Options)
	// RunDir holds the generated wpa_supplicant.conf (0600: it has the
	// password) and the control sockets; default a directory under
	// os.TempDir(), which is tmpfs on gokrazy.
	RunDir string
	Config Config
	Log    *slog.Logger
	Kernel ethernet.Kernel // for addressing; required

	// OnEvent gets every uplink event (the ethernet.Event shape: Up is the
	// level, Reason says why). Called synchronously; return quickly.
	OnEvent func(ethernet.Event)
	// OnDemote is called when the signal policy changes its verdict
	// (Supervisor.SetDemoted fits).
	OnDemote func(name string, demoted bool)

	// NoSpawn attaches to a wpa_supplicant somebody else runs, with its
	// control socket at RunDir/ctrl/<Interface>.
	NoSpawn bool
	// Wrap prefixes the wpa_supplicant command (e.g. "ip netns exec X"
	// in the lab and tests).
	Wrap []string
	// Restart backoff for wpa_supplicant (defaults 1s .. 30s).
	MinBackoff, MaxBackoff time.Duration
	// RoamCooldown is the least time between our band-steering ROAMs
	// (default 2 min).
	RoamCooldown time.Duration
	// DHCP tuning passed to the ethernet manager (tests shorten).
	DHCPTimeout, DHCPMinRetry time.Duration
}

// Status of the WiFi uplink.
type Status struct {
	Uplink       string          `json:"uplink"`
	Interface    string          `json:"interface"`
	State        string          `json:"wpa_state"` // wpa_supplicant's: COMPLETED, SCANNING, ...
	Associated   bool            `json:"associated"`
	Up           bool            `json:"up"` // associated and addressed
	SSID         string          `json:"ssid,omitempty"`
	BSSID        string          `json:"bssid,omitempty"`
	FrequencyMHz int             `json:"frequency_mhz,omitempty"`
	Band         string          `json:"band,omitempty"`
	SignalDBm    int             `json:"signal_dbm,omitempty"`
	LinkRateMbps int             `json:"link_rate_mbps,omitempty"`
	KeyMgmt      string          `json:"key_mgmt,omitempty"`
	Demoted      bool            `json:"demoted"`
	Roams        int             `json:"roams"`
	Restarts     int             `json:"supplicant_restarts"`
	PID          int             `json:"supplicant_pid,omitempty"`
	LastEvent    string          `json:"last_event,omitempty"`
	LastError    string          `json:"last_error,omitempty"`
	IP           ethernet.Status `json:"ip"`
}

// Manager runs one WiFi uplink.
type Manager struct {
	o      Options
	log    *slog.Logger
	eth    *ethernet.Manager
	events chan ethernet.Event
	policy SignalPolicy
	prefs  []string

	mu       sync.Mutex
	st       Status
	ethUp    bool
	up       bool
	lastRoam time.Time
	lastScan time.Time
}

// New validates; nothing runs until Run.
func New(o Options) (*Manager, error) {
	if o.Name == "" {
		return nil, errors.New("name: empty")
	}
	if o.Interface == "" {
		return nil, fmt.Errorf("uplink %s: interface: empty", o.Name)
	}
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("uplink %s: %w", o.Name, err)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.RunDir == "" {
		o.RunDir = filepath.Join(os.TempDir(), "lifeline-wifi-"+o.Interface)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.RoamCooldown <= 0 {
		o.RoamCooldown = 2 * time.Minute
	}
	c := &o.Config
	m := &Manager{o: o, log: o.Log.With("uplink", o.Name), events: make(chan ethernet.Event, 64), prefs: c.bands()}
	m.policy = SignalPolicy{Threshold: -75, Hysteresis: 5, Hold: 10 * time.Second}
	if c.DemoteSignal != 0 {
		m.policy.Threshold = c.DemoteSignal
	}
	if c.Hysteresis != 0 {
		m.policy.Hysteresis = c.Hysteresis
	}
	if c.DemoteHold != 0 {
		m.policy.Hold = c.DemoteHold.D()
	}
	ip := ethernet.Config{DHCP: true}
	if c.IP != nil {
		ip = *c.IP
	}
	eth, err := ethernet.New(ethernet.Options{
		Name: o.Name, Device: o.Interface, Table: o.Table, StateDir: o.StateDir, Config: ip,
		Log: o.Log, Kernel: o.Kernel, OnEvent: m.onEth,
		DHCPTimeout: o.DHCPTimeout, DHCPMinRetry: o.DHCPMinRetry,
	})
	if err != nil {
		return nil, err
	}
	m.eth = eth
	m.st = Status{Uplink: o.Name, Interface: o.Interface, State: "STOPPED"}
	return m, nil
}

// Events delivers uplink events; like ethernet.Manager's, it never blocks
// the manager (oldest dropped).
func (m *Manager) Events() <-chan ethernet.Event { return m.events }

// Status returns a snapshot.
func (m *Manager) Status() Status {
	m.mu.Lock()
	st := m.st
	m.mu.Unlock()
	st.IP = m.eth.Status()
	return st
}

// CtrlPath is the control socket of the interface.
func (m *Manager) CtrlPath() string {
	return filepath.Join(m.o.RunDir, "ctrl", m.o.Interface)
}

// ConfPath is the generated wpa_supplicant.conf.
func (m *Manager) ConfPath() string {
	return filepath.Join(m.o.RunDir, "wpa_supplicant.conf")
}

func (m *Manager) send(e ethernet.Event) {
	if m.o.OnEvent != nil {
		m.o.OnEvent(e)
	}
	for {
		select {
		case m.events <- e:
			return
		default:
			select {
			case <-m.events:
			default:
			}
		}
	}
}

// update recomputes the uplink level (associated and addressed) and
// reports a change; extra reports a roam while up. Called with m.mu held;
// returns the events to send after unlocking.
func (m *Manager) update(reason string) []ethernet.Event {
	up := m.st.Associated && m.ethUp
	m.st.Up = up
	if up == m.up {
		return nil
	}
	m.up = up
	return []ethernet.Event{{Uplink: m.o.Name, Up: up, Reason: reason, At: time.Now()}}
}

func (m *Manager) onEth(e ethernet.Event) {
	m.mu.Lock()
	m.ethUp = e.Up
	evs := m.update(e.Reason)
	if len(evs) == 1 {
		evs[0].Lease = e.Lease
	} else if e.Up && m.up && e.Lease != nil {
		evs = []ethernet.Event{e} // renewed lease while up
	}
	m.mu.Unlock()
	for _, e := range evs {
		m.send(e)
	}
}

// Run supervises wpa_supplicant and the addressing until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	password := m.o.Config.Password
	if m.o.Config.PasswordFile != "" {
		b, err := os.ReadFile(m.o.Config.PasswordFile)
		if err != nil {
			return fmt.Errorf("uplink %s: password_file: %w", m.o.Name, err)
		}
		password = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
		if err := CheckPassword(password); err != nil {
			return fmt.Errorf("uplink %s: password_file %s: %w", m.o.Name, m.o.Config.PasswordFile, err)
		}
	}
	ctrlDir := filepath.Dir(m.CtrlPath())
	if err := os.MkdirAll(ctrlDir, 0o700); err != nil {
		return fmt.Errorf("uplink %s: %w", m.o.Name, err)
	}
	if !m.o.NoSpawn {
		conf, err := m.o.Config.SupplicantConfig(ctrlDir, password)
		if err != nil {
			return fmt.Errorf("uplink %s: %w", m.o.Name, err)
		}
		if err := writeFile0600(m.ConfPath(), conf); err != nil {
			return fmt.Errorf("uplink %s: %w", m.o.Name, err)
		}
	}

	ethCtx, ethCancel := context.WithCancel(ctx)
	ethDone := make(chan error, 1)
	go func() { ethDone <- m.eth.Run(ethCtx) }()
	defer func() { ethCancel(); <-ethDone }()
	go func() {
		// The ethernet manager's own queue is not read by anyone else:
		// drain it (OnEvent already told us everything).
		for {
			select {
			case <-ethCtx.Done():
				return
			case <-m.eth.Events():
			}
		}
	}()

	backoff := m.o.MinBackoff
	for ctx.Err() == nil {
		started := time.Now()
		err := m.supervise(ctx)
		m.disassociated("STOPPED", "wpa_supplicant gone: "+errString(err))
		if ctx.Err() != nil {
			break
		}
		m.mu.Lock()
		m.st.Restarts++
		m.st.LastError = errString(err)
		m.st.State = "STOPPED"
		m.mu.Unlock()
		if time.Since(started) > 2*m.o.MaxBackoff {
			backoff = m.o.MinBackoff // it ran well for a while
		}
		m.log.Warn("wifi: wpa_supplicant ended, restarting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, m.o.MaxBackoff)
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "exited"
	}
	return err.Error()
}

func writeFile0600(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// supplicantPaths are tried when wpa_supplicant is not in PATH: Debian's
// place, and /user/wpa_supplicant, where the gokrazy image has it (gokrazy
// installs its Go packages as /user/<name>; image/wpa_supplicant starts the
// Debian binary the image carries with its own libraries, see
// image/README.md).
var supplicantPaths = []string{"/usr/sbin/wpa_supplicant", "/sbin/wpa_supplicant", "/user/wpa_supplicant"}

func (m *Manager) supplicantBin() string {
	if b := m.o.Config.Supplicant; b != "" {
		return b
	}
	if p, err := exec.LookPath("wpa_supplicant"); err == nil {
		return p
	}
	for _, p := range supplicantPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "wpa_supplicant"
}

// supervise runs one wpa_supplicant lifetime (or one attachment with
// NoSpawn) and returns why it ended.
func (m *Manager) supervise(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited := make(chan error, 1)
	if !m.o.NoSpawn {
		os.Remove(m.CtrlPath()) // a stale socket from a killed run blocks the new one
		driver := m.o.Config.Driver
		if driver == "" {
			driver = "nl80211"
		}
		args := append(append([]string(nil), m.o.Wrap...), m.supplicantBin(), "-i", m.o.Interface, "-c", m.ConfPath(), "-D", driver)
		cmd := exec.CommandContext(sctx, args[0], args[1:]...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 3 * time.Second
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		cmd.Stderr = cmd.Stdout
		tail := &lineTail{}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", args[0], err)
		}
		m.mu.Lock()
		m.st.PID = cmd.Process.Pid
		m.mu.Unlock()
		go func() {
			tail.copy(out)
			err := cmd.Wait()
			if err != nil {
				err = fmt.Errorf("%s: %w (%s)", filepath.Base(m.supplicantBin()), err, tail.String())
			}
			exited <- err
		}()
		defer func() {
			cancel()
			<-exited
			m.mu.Lock()
			m.st.PID = 0
			m.mu.Unlock()
		}()
	}
	ctrl, err := m.connect(sctx, exited)
	if err != nil {
		return err
	}
	defer ctrl.Close()
	mon, err := Attach(sctx, m.CtrlPath())
	if err != nil {
		return err
	}
	defer mon.Close()
	return m.session(sctx, ctrl, mon, exited)
}

// connect waits for the control socket to answer PING (wpa_supplicant
// creates it only after reading its config and initialising the driver).
func (m *Manager) connect(ctx context.Context, exited chan error) (*Ctrl, error) {
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		c, err := DialCtrl(m.CtrlPath())
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			r, err2 := c.Request(rctx, "PING")
			cancel()
			if err2 == nil && r == "PONG\n" {
				return c, nil
			}
			c.Close()
			err = err2
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-exited:
			exited <- err // for supervise's deferred wait
			if err == nil {
				err = errors.New("wpa_supplicant exited at start")
			}
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("wpa_supplicant control %s: no PONG within 15s: %w", m.CtrlPath(), last)
}

func (m *Manager) session(ctx context.Context, ctrl *Ctrl, mon *Monitor, exited chan error) error {
	m.refreshStatus(ctx, ctrl, "")
	poll := time.NewTicker(m.pollInterval())
	defer poll.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			exited <- err
			if err == nil {
				err = errors.New("wpa_supplicant exited")
			}
			return err
		case e, ok := <-mon.Events():
			if !ok {
				return errors.New("wpa_supplicant event connection closed")
			}
			if e.Name == "CTRL-EVENT-TERMINATING" {
				return errors.New("wpa_supplicant terminating")
			}
			m.onEvent(ctx, ctrl, e)
		case <-poll.C:
			if err := m.pollSignal(ctx, ctrl); err != nil {
				// A wedged supplicant: three silent polls in a row.
				if fails++; fails >= 3 {
					return fmt.Errorf("wpa_supplicant not answering: %w", err)
				}
				continue
			}
			fails = 0
		}
	}
}

func (m *Manager) pollInterval() time.Duration {
	if d := m.o.Config.PollInterval.D(); d > 0 {
		return d
	}
	return 2 * time.Second
}

// refreshStatus reads STATUS; reason names what triggered it (for the
// association event).
func (m *Manager) refreshStatus(ctx context.Context, ctrl *Ctrl, reason string) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := ctrl.Request(rctx, "STATUS")
	if err != nil {
		m.log.Warn("wifi: STATUS", "err", err)
		return err
	}
	kv := ParseKV(r)
	m.mu.Lock()
	m.st.State = kv["wpa_state"]
	m.st.SSID = kv["ssid"]
	m.st.KeyMgmt = kv["key_mgmt"]
	if kv["wpa_state"] == "COMPLETED" {
		m.st.BSSID = kv["bssid"]
		m.st.FrequencyMHz, _ = strconv.Atoi(kv["freq"])
		m.st.Band = BandOf(m.st.FrequencyMHz)
	}
	var evs []ethernet.Event
	if kv["wpa_state"] == "COMPLETED" && !m.st.Associated {
		m.st.Associated = true
		if reason == "" {
			reason = "wifi associated to " + m.st.BSSID
		}
		evs = m.update(reason)
	}
	m.mu.Unlock()
	for _, e := range evs {
		m.send(e)
	}
	return nil
}

func (m *Manager) disassociated(state, reason string) {
	m.mu.Lock()
	m.st.State = state
	m.st.Associated = false
	m.st.BSSID, m.st.FrequencyMHz, m.st.Band, m.st.SignalDBm, m.st.LinkRateMbps = "", 0, "", 0, 0
	evs := m.update(reason)
	wasDemoted := m.policy.Reset()
	m.st.Demoted = false
	m.mu.Unlock()
	for _, e := range evs {
		m.send(e)
	}
	if wasDemoted && m.o.OnDemote != nil {
		m.o.OnDemote(m.o.Name, false)
	}
}

func (m *Manager) onEvent(ctx context.Context, ctrl *Ctrl, e Event) {
	m.mu.Lock()
	m.st.LastEvent = e.Text
	m.mu.Unlock()
	switch e.Name {
	case "CTRL-EVENT-CONNECTED":
		m.mu.Lock()
		prev, was := m.st.BSSID, m.st.Associated
		roamed := was && prev != "" && e.BSSID != "" && prev != e.BSSID
		if roamed {
			m.st.Roams++
		}
		m.mu.Unlock()
		if roamed {
			// Roaming within the ESS keeps the address; say so, do not
			// report the uplink down.
			m.refreshStatus(ctx, ctrl, "")
			st := m.Status()
			m.send(ethernet.Event{Uplink: m.o.Name, Up: st.Up, At: time.Now(),
				Reason: fmt.Sprintf("wifi roamed %s -> %s (%d MHz)", prev, st.BSSID, st.FrequencyMHz)})
			return
		}
		m.refreshStatus(ctx, ctrl, "wifi connected to "+e.BSSID)
		m.pollSignal(ctx, ctrl)
		m.scanForBetterBand(ctx, ctrl)
	case "CTRL-EVENT-DISCONNECTED":
		reason := "wifi disconnected"
		if r := e.Fields["reason"]; r != "" {
			reason += " reason=" + r
		}
		if e.Fields["locally_generated"] == "1" {
			reason += " (local)"
		}
		m.disassociated("DISCONNECTED", reason)
	case "CTRL-EVENT-SIGNAL-CHANGE":
		if s, err := strconv.Atoi(e.Fields["signal"]); err == nil && s > -200 {
			m.signal(s, -1)
		}
	case "CTRL-EVENT-SSID-TEMP-DISABLED", "CTRL-EVENT-AUTH-REJECT", "CTRL-EVENT-ASSOC-REJECT", "CTRL-EVENT-NETWORK-NOT-FOUND":
		m.mu.Lock()
		m.st.LastError = e.Text
		m.mu.Unlock()
	case "CTRL-EVENT-SCAN-RESULTS":
		m.steer(ctx, ctrl)
	}
}

func (m *Manager) pollSignal(ctx context.Context, ctrl *Ctrl) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if !m.Status().Associated {
		// STATUS doubles as the liveness check and shows progress
		// (SCANNING, ASSOCIATING, ...) while not connected.
		return m.refreshStatus(rctx, ctrl, "")
	}
	r, err := ctrl.Request(rctx, "SIGNAL_POLL")
	if err != nil {
		if strings.HasPrefix(r, "FAIL") {
			return nil // not associated right now: a live answer
		}
		return err
	}
	kv := ParseKV(r)
	rssi, err := strconv.Atoi(kv["RSSI"])
	if err != nil {
		return nil
	}
	rate, _ := strconv.Atoi(kv["LINKSPEED"])
	if f, err := strconv.Atoi(kv["FREQUENCY"]); err == nil && f > 0 {
		m.mu.Lock()
		m.st.FrequencyMHz, m.st.Band = f, BandOf(f)
		m.mu.Unlock()
	}
	m.signal(rssi, rate)
	return nil
}

// signal records a sample and runs the demotion policy.
func (m *Manager) signal(dbm, rateMbps int) {
	if m.o.Config.DemoteDisabled {
		m.mu.Lock()
		m.st.SignalDBm = dbm
		if rateMbps >= 0 {
			m.st.LinkRateMbps = rateMbps
		}
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	m.st.SignalDBm = dbm
	if rateMbps >= 0 {
		m.st.LinkRateMbps = rateMbps
	}
	demoted, changed := m.policy.Observe(time.Now(), float64(dbm))
	m.st.Demoted = demoted
	m.mu.Unlock()
	if changed {
		m.log.Info("wifi: signal policy", "demoted", demoted, "signal_dbm", dbm)
		if m.o.OnDemote != nil {
			m.o.OnDemote(m.o.Name, demoted)
		}
	}
}

// scanForBetterBand asks for one scan after connecting on a band below
// our first choice: wpa_supplicant picked the BSS by its own estimate, and
// bgscan only scans once the signal is weak, so without this a strong
// 5 GHz link would never learn of a usable 6 GHz AP.
func (m *Manager) scanForBetterBand(ctx context.Context, ctrl *Ctrl) {
	st := m.Status()
	if m.o.Config.BSSID != "" || !st.Associated || st.Band == "" || bandRank(m.prefs, st.Band) == 0 {
		return
	}
	m.mu.Lock()
	if time.Since(m.lastScan) < m.o.RoamCooldown {
		m.mu.Unlock()
		return
	}
	m.lastScan = time.Now()
	m.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := ctrl.Request(rctx, "SCAN"); err != nil {
		m.log.Info("wifi: SCAN for a better band", "err", err)
	}
}

// steer moves to a better band when a scan found one (bgscan scans when
// the signal sinks). Never with a pinned BSSID, and at most once per
// RoamCooldown, so two APs cannot bounce us.
func (m *Manager) steer(ctx context.Context, ctrl *Ctrl) {
	st := m.Status()
	if m.o.Config.BSSID != "" || !st.Associated || st.Band == "" {
		return
	}
	m.mu.Lock()
	cool := time.Since(m.lastRoam) < m.o.RoamCooldown
	m.mu.Unlock()
	if cool {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := ctrl.Request(rctx, "SCAN_RESULTS")
	if err != nil {
		return
	}
	res, err := ParseScanResults(r)
	if err != nil {
		m.log.Warn("wifi: SCAN_RESULTS", "err", err)
	}
	// Never steer onto a BSS the signal policy would demote at once.
	floor := int(m.policy.Threshold + m.policy.Hysteresis)
	best, ok := PreferredBSS(res, m.o.Config.SSID, m.prefs, floor)
	if !ok || best.BSSID == st.BSSID || bandRank(m.prefs, BandOf(best.Freq)) >= bandRank(m.prefs, st.Band) {
		return
	}
	m.mu.Lock()
	m.lastRoam = time.Now()
	m.mu.Unlock()
	m.log.Info("wifi: steering to preferred band", "bssid", best.BSSID, "freq", best.Freq, "signal", best.Signal)
	if _, err := ctrl.Request(rctx, "ROAM "+best.BSSID); err != nil {
		m.log.Warn("wifi: ROAM", "bssid", best.BSSID, "err", err)
	}
}

// lineTail keeps the last lines of wpa_supplicant's output for errors.
type lineTail struct {
	mu    sync.Mutex
	lines []string
}

func (t *lineTail) copy(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		t.mu.Lock()
		t.lines = append(t.lines, sc.Text())
		if len(t.lines) > 5 {
			t.lines = t.lines[1:]
		}
		t.mu.Unlock()
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, " | ")
}
