package wifi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The wpa_supplicant control interface is a unix datagram socket per
// interface (ctrl_interface/IFNAME). A client binds its own socket, sends
// a command per datagram and gets one reply datagram; after ATTACH, events
// arrive on the same socket as "<prio>TEXT". Like wpa_cli we use one
// socket for commands and another, attached, for events, so that replies
// and events never interleave.

var ctrlSeq atomic.Int64

// Ctrl is one control connection.
type Ctrl struct {
	mu    sync.Mutex // one request at a time
	c     *net.UnixConn
	local string
}

// DialCtrl connects to the control socket at path.
func DialCtrl(path string) (*Ctrl, error) {
	local := filepath.Join(os.TempDir(), fmt.Sprintf("lifeline-wpa-%d-%d", os.Getpid(), ctrlSeq.Add(1)))
	os.Remove(local)
	c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"}, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.Remove(local)
		return nil, fmt.Errorf("dial wpa_supplicant control %s: %w", path, err)
	}
	return &Ctrl{c: c, local: local}, nil
}

// Close closes the connection and removes its socket file.
func (c *Ctrl) Close() error {
	err := c.c.Close()
	os.Remove(c.local)
	return err
}

// Request sends cmd and returns the reply (trailing newline kept as sent).
// Unsolicited event datagrams (attached connections) are skipped.
func (c *Ctrl) Request(ctx context.Context, cmd string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(5 * time.Second)
	}
	c.c.SetDeadline(dl)
	if _, err := c.c.Write([]byte(cmd)); err != nil {
		return "", fmt.Errorf("wpa_supplicant %s: %w", verb(cmd), err)
	}
	buf := make([]byte, 16384)
	for {
		n, err := c.c.Read(buf)
		if err != nil {
			return "", fmt.Errorf("wpa_supplicant %s: %w", verb(cmd), err)
		}
		if n > 0 && buf[0] == '<' {
			continue
		}
		r := string(buf[:n])
		if r == "FAIL\n" || r == "UNKNOWN COMMAND\n" {
			return r, fmt.Errorf("wpa_supplicant %s: %s", verb(cmd), strings.TrimSpace(r))
		}
		return r, nil
	}
}

// verb keeps secrets out of error messages (SET_NETWORK ... psk).
func verb(cmd string) string {
	if i := strings.IndexByte(cmd, ' '); i > 0 {
		return cmd[:i]
	}
	return cmd
}

// Event is one unsolicited message.
type Event struct {
	Level  int    // wpa_debug level: 2 info, 3 msg ...
	Name   string // first word: "CTRL-EVENT-CONNECTED", "Trying", ...
	Text   string // everything after the level
	Fields map[string]string
	BSSID  string // from CONNECTED ("Connection to X completed") or bssid=
}

// ParseEvent parses "<3>CTRL-EVENT-DISCONNECTED bssid=… reason=3".
func ParseEvent(s string) (Event, error) {
	s = strings.TrimRight(s, "\n")
	if !strings.HasPrefix(s, "<") {
		return Event{}, fmt.Errorf("event %q: no <level> prefix", s)
	}
	end := strings.IndexByte(s, '>')
	if end < 0 {
		return Event{}, fmt.Errorf("event %q: unterminated level", s)
	}
	lvl, err := strconv.Atoi(s[1:end])
	if err != nil {
		return Event{}, fmt.Errorf("event %q: level: %w", s, err)
	}
	e := Event{Level: lvl, Text: s[end+1:], Fields: map[string]string{}}
	words := splitFields(e.Text)
	if len(words) > 0 {
		e.Name = words[0]
	}
	for _, w := range words[1:] {
		if k, v, ok := strings.Cut(w, "="); ok && k != "" {
			e.Fields[k] = strings.Trim(v, `"`)
		}
	}
	e.BSSID = e.Fields["bssid"]
	if e.Name == "CTRL-EVENT-CONNECTED" {
		// "CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=0 id_str=]"
		if i := strings.Index(e.Text, "Connection to "); i >= 0 {
			rest := e.Text[i+len("Connection to "):]
			if j := strings.IndexByte(rest, ' '); j > 0 {
				e.BSSID = rest[:j]
			}
		}
		for _, w := range words {
			if k, v, ok := strings.Cut(strings.Trim(w, "[]"), "="); ok {
				e.Fields[k] = v
			}
		}
	}
	return e, nil
}

// splitFields splits on spaces, keeping "quoted strings" together.
func splitFields(s string) []string {
	var out []string
	var cur strings.Builder
	inQ := false
	for _, r := range s {
		switch {
		case r == '"':
			inQ = !inQ
			cur.WriteRune(r)
		case r == ' ' && !inQ:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// ParseKV parses STATUS and SIGNAL_POLL replies ("key=value" lines).
func ParseKV(s string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// BSS is one SCAN_RESULTS line.
type BSS struct {
	BSSID  string
	Freq   int
	Signal int // dBm
	Flags  string
	SSID   string
}

// ParseScanResults parses the SCAN_RESULTS table; malformed lines are
// reported with their line number.
func ParseScanResults(s string) ([]BSS, error) {
	var out []BSS
	for i, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if i == 0 || l == "" { // header "bssid / frequency / signal level / flags / ssid"
			continue
		}
		f := strings.SplitN(l, "\t", 5)
		if len(f) < 4 {
			return out, fmt.Errorf("scan results line %d: %d fields, want 5", i+1, len(f))
		}
		freq, err1 := strconv.Atoi(f[1])
		sig, err2 := strconv.Atoi(f[2])
		if err := errors.Join(err1, err2); err != nil {
			return out, fmt.Errorf("scan results line %d: %w", i+1, err)
		}
		b := BSS{BSSID: f[0], Freq: freq, Signal: sig, Flags: f[3]}
		if len(f) == 5 {
			b.SSID = f[4]
		}
		out = append(out, b)
	}
	return out, nil
}

// Monitor is an attached control connection delivering events.
type Monitor struct {
	c      *Ctrl
	events chan Event
	done   chan struct{}
	once   sync.Once
}

// Attach opens a second connection and ATTACHes it.
func Attach(ctx context.Context, path string) (*Monitor, error) {
	c, err := DialCtrl(path)
	if err != nil {
		return nil, err
	}
	if r, err := c.Request(ctx, "ATTACH"); err != nil || r != "OK\n" {
		c.Close()
		if err == nil {
			err = fmt.Errorf("wpa_supplicant ATTACH: reply %q", r)
		}
		return nil, err
	}
	m := &Monitor{c: c, events: make(chan Event, 64), done: make(chan struct{})}
	go m.read()
	return m, nil
}

func (m *Monitor) read() {
	defer close(m.events)
	m.c.c.SetReadDeadline(time.Time{})
	buf := make([]byte, 16384)
	for {
		n, err := m.c.c.Read(buf)
		if err != nil {
			return
		}
		e, err := ParseEvent(string(buf[:n]))
		if err != nil {
			continue // a late reply, not an event
		}
		select {
		case m.events <- e:
		case <-m.done:
			return
		}
	}
}

// Events ends (is closed) when the monitor is closed.
func (m *Monitor) Events() <-chan Event { return m.events }

// Close detaches and closes.
func (m *Monitor) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		m.c.c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		m.c.c.Write([]byte("DETACH"))
		err = m.c.Close()
	})
	return err
}
