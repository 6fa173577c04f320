package at

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// fakeModem answers command lines with a script function. It implements
// E0/E1 itself (the resync relies on echo), like a real modem.
type fakeModem struct {
	t    *testing.T
	conn net.Conn
	mu   sync.Mutex
	echo bool
	got  []string
}

// answer returns the raw bytes to send for cmd ("" = say nothing).
type answer func(m *fakeModem, cmd string) string

func newFake(t *testing.T, echo bool, fn answer) (*Port, *fakeModem) {
	t.Helper()
	host, dev := net.Pipe()
	m := &fakeModem{t: t, conn: dev, echo: echo}
	p := NewPort(host, Options{SyncTimeout: 2 * time.Second, Logf: t.Logf})
	t.Cleanup(func() { p.Close(); dev.Close() })
	go func() {
		var line []byte
		buf := make([]byte, 256)
		for {
			n, err := dev.Read(buf)
			for _, c := range buf[:n] {
				if c != '\r' {
					line = append(line, c)
					continue
				}
				cmd := string(line)
				line = line[:0]
				m.mu.Lock()
				m.got = append(m.got, cmd)
				echo := m.echo
				m.mu.Unlock()
				out := ""
				if echo {
					out = cmd + "\r"
				}
				switch strings.ToUpper(cmd) {
				case "ATE1":
					m.setEcho(true)
					out += "\r\nOK\r\n"
				case "ATE0":
					m.setEcho(false)
					out += "\r\nOK\r\n"
				default:
					out += fn(m, cmd)
				}
				if _, err := dev.Write([]byte(out)); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return p, m
}

func (m *fakeModem) setEcho(on bool) {
	m.mu.Lock()
	m.echo = on
	m.mu.Unlock()
}

func (m *fakeModem) send(s string) {
	if _, err := m.conn.Write([]byte(s)); err != nil {
		m.t.Errorf("fake modem write: %v", err)
	}
}

func reply(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("\r\n" + l + "\r\n")
	}
	return b.String()
}

func csqOK(m *fakeModem, cmd string) string {
	if cmd == "AT+CSQ" {
		return reply("+CSQ: 18,99", "OK")
	}
	return reply("OK")
}

var bg = context.Background()

func wantInfo(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("info = %q, want %q", got, want)
	}
}

func TestEchoOnAndFusedLines(t *testing.T) {
	p, m := newFake(t, true, func(m *fakeModem, cmd string) string {
		if cmd == "ATE0Q0V1" {
			// The fake already echoed; add what a modem that restarted
			// while we typed sends: "RD" of "RDY" fused with the echo.
			m.setEcho(false)
			return "RDATE0Q0V1\r\r\nOK\r\n"
		}
		return csqOK(m, cmd)
	})
	if _, err := p.Command(bg, "E0Q0V1", time.Second); err != nil {
		t.Fatalf("E0Q0V1: %v", err)
	}
	select {
	case u := <-p.URCs():
		if u.Line != "RDY" {
			t.Fatalf("URC %q, want RDY from the fused line", u.Line)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("fused RDY not reported")
	}
	m.setEcho(true)
	info, err := p.Command(bg, "+CSQ", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo(t, info, "+CSQ: 18,99") // echo "AT+CSQ" not in the reply
}

func TestNULAndGarbageBeforeFirstCRLF(t *testing.T) {
	p, m := newFake(t, false, csqOK)
	m.send("\x00\x00\xff\xfe\x00garbage") // no line end yet
	info, err := p.Command(bg, "+CSQ", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The garbage ends at the reply's leading CRLF and becomes a line of
	// its own (NULs removed); it never merges with "+CSQ: 18,99".
	wantInfo(t, info, "\xff\xfegarbage", "+CSQ: 18,99")
}

func TestOverlongLineIsDropped(t *testing.T) {
	p, m := newFake(t, false, csqOK)
	go m.send(strings.Repeat("A", MaxLine+10000))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, over := p.Stats(); over == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("overlong line not detected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	info, err := p.Command(bg, "+CSQ", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo(t, info, "+CSQ: 18,99")
}

func TestLateOKDoesNotAnswerNextCommand(t *testing.T) {
	p, _ := newFake(t, false, func(m *fakeModem, cmd string) string {
		switch cmd {
		case "AT+SLOW":
			time.Sleep(400 * time.Millisecond) // the modem is busy; later input queues
			return reply("OK")
		case "AT+CGACT=1,1":
			return reply("+CME ERROR: 30")
		}
		return csqOK(m, cmd)
	})
	_, err := p.Command(bg, "+SLOW", 100*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("+SLOW: %v, want timeout", err)
	}
	// A command with no info lines: had the late OK answered it, it
	// would succeed.
	_, err = p.Command(bg, "+CGACT=1,1", time.Second)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != "+CME ERROR: 30" {
		t.Fatalf("+CGACT=1,1: %v, want its own +CME ERROR: 30", err)
	}
	info, err := p.Command(bg, "+CSQ", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo(t, info, "+CSQ: 18,99")
}

func TestLateOKWhileIdleIsDiscarded(t *testing.T) {
	p, m := newFake(t, false, csqOK)
	m.send(reply("OK"))
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, stale, _ := p.Stats(); stale == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stale OK not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	info, err := p.Command(bg, "+CSQ", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo(t, info, "+CSQ: 18,99")
}

func TestFinalResultCodes(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		wantErr   string // "" = success
		info      []string
	}{
		{"error", reply("ERROR"), "ERROR", nil},
		{"cme numeric", reply("+CME ERROR: 10"), "+CME ERROR: 10", nil},
		{"cme textual", reply("+CME ERROR: SIM not inserted"), "+CME ERROR: SIM not inserted", nil},
		{"command not support", reply("COMMAND NOT SUPPORT"), "COMMAND NOT SUPPORT", nil},
		{"no carrier on non-dial", reply("NO CARRIER"), "NO CARRIER", nil},
		{"connect on non-dial", reply("CONNECT 150000000"), "", nil},
		{"info then ok", reply("+GTRNDIS: 1,1", "OK"), "", []string{"+GTRNDIS: 1,1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newFake(t, false, func(*fakeModem, string) string { return tc.raw })
			start := time.Now()
			info, err := p.Command(bg, "+GTRNDIS=1,1", 5*time.Second)
			if time.Since(start) > 2*time.Second {
				t.Fatalf("ended after %v: by timeout, not by the final result code", time.Since(start))
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				wantInfo(t, info, tc.info...)
				return
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Code != tc.wantErr {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestCMEErrorAccessor(t *testing.T) {
	for raw, want := range map[string]string{"+CME ERROR: 10": "10", "+CME ERROR: SIM not inserted": "SIM not inserted"} {
		got, ok := (&Error{Code: raw}).CME()
		if !ok || got != want {
			t.Errorf("CME(%q) = %q,%v want %q", raw, got, ok, want)
		}
	}
	if _, ok := (&Error{Code: "ERROR"}).CME(); ok {
		t.Error("plain ERROR reported as CME")
	}
}

func TestURCInTheMiddleOfAReply(t *testing.T) {
	p, _ := newFake(t, false, func(m *fakeModem, cmd string) string {
		switch cmd {
		case "AT+CSQ":
			return reply("+CSQ: 18,99", `+CGEV: NW DEACT "IP","10.0.0.1",1`, "OK")
		case "AT+CPIN?":
			// A reply that shares a URC prefix stays a reply.
			return reply("+CPIN: READY", "+CEREG: 1", "OK")
		}
		return reply("OK")
	})
	info, err := p.Command(bg, "+CSQ", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo(t, info, "+CSQ: 18,99")
	if u := <-p.URCs(); !strings.HasPrefix(u.Line, "+CGEV: NW DEACT") {
		t.Fatalf("URC %q", u.Line)
	}
	info, err = p.Command(bg, "+CPIN?", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo(t, info, "+CPIN: READY")
	if u := <-p.URCs(); u.Line != "+CEREG: 1" {
		t.Fatalf("URC %q", u.Line)
	}
}

func TestURCFlood(t *testing.T) {
	const n = 5000
	p, m := newFake(t, false, csqOK)
	go m.send(strings.Repeat(reply("+QIND: \"csq\",20,99"), n))
	// Nobody reads URCs: the flood must not stall the replies.
	for i := 0; i < 3; i++ {
		info, err := p.Command(bg, "+CSQ", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantInfo(t, info, "+CSQ: 18,99")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		dropped, _, _ := p.Stats()
		if dropped+len(p.URCs()) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d + queued %d != %d", dropped, len(p.URCs()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRDYMidCommand(t *testing.T) {
	p, _ := newFake(t, false, func(m *fakeModem, cmd string) string {
		return reply("RDY", "+CPIN: READY") // restarted: the answer never comes
	})
	start := time.Now()
	_, err := p.Command(bg, "+COPS=0", 10*time.Second)
	if !errors.Is(err, ErrReset) {
		t.Fatalf("err = %v, want ErrReset", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
}

func TestPortVanishes(t *testing.T) {
	p, _ := newFake(t, false, func(m *fakeModem, cmd string) string {
		m.conn.Close() // USB unplugged mid-command
		return ""
	})
	_, err := p.Command(bg, "+CSQ", 5*time.Second)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	select {
	case <-p.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Done not closed")
	}
	if _, err := p.Command(bg, "+CSQ", time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("after vanish: %v", err)
	}
}

func TestExclusiveLock(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	f, err := OpenTTY(slave.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = OpenTTY(slave.Name())
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v, want 'in use'", err)
	}
	f.Close()
	g, err := OpenTTY(slave.Name())
	if err != nil {
		t.Fatalf("open after release: %v", err)
	}
	g.Close()
}

func TestOpenTTYNotATTY(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := OpenTTY(f.Name()); err == nil || !strings.Contains(err.Error(), "not a tty") {
		t.Fatalf("err = %v", err)
	}
}
