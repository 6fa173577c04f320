package at

import (
	"net"
	"strings"
	"testing"
	"time"

	wat "github.com/warthog618/modem/at"
)

// These tests pin down why this package does not wrap
// github.com/warthog618/modem/at v0.4.0: each one shows a gap of the
// library and passes only while the gap exists. If one fails after an
// upgrade, the library fixed it: reconsider wrapping it.

func upstream(t *testing.T, fn func(cmd string) string) *wat.AT {
	t.Helper()
	host, dev := net.Pipe()
	t.Cleanup(func() { host.Close(); dev.Close() })
	go func() {
		buf := make([]byte, 256)
		var line []byte
		for {
			n, err := dev.Read(buf)
			for _, c := range buf[:n] {
				switch c {
				case '\r':
				case '\n':
					out := fn(string(line))
					line = line[:0]
					if out != "" {
						if _, err := dev.Write([]byte(out)); err != nil {
							return
						}
					}
				default:
					line = append(line, c)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return wat.New(host, wat.WithTimeout(300*time.Millisecond))
}

func TestUpstreamGapCommandNotSupportEndsByTimeout(t *testing.T) {
	a := upstream(t, func(string) string { return reply("COMMAND NOT SUPPORT") })
	_, err := a.Command("+QFOO")
	if err != wat.ErrDeadlineExceeded {
		t.Fatalf("upstream returned %v; gap fixed?", err)
	}
}

func TestUpstreamGapIndicationLeaksIntoReply(t *testing.T) {
	a := upstream(t, func(cmd string) string {
		return reply("+CSQ: 18,99", `+CGEV: NW DEACT "IP","10.0.0.1",1`, "OK")
	})
	got := make(chan []string, 1)
	if err := a.AddIndication("+CGEV:", func(l []string) { got <- l }); err != nil {
		t.Fatal(err)
	}
	info, err := a.Command("+CSQ")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(info, "|"), "+CGEV") {
		t.Fatalf("reply %q has no URC; gap fixed?", info)
	}
}

func TestUpstreamGapLateOKAnswersNextCommand(t *testing.T) {
	n := 0
	a := upstream(t, func(cmd string) string {
		n++
		if n == 1 {
			time.Sleep(400 * time.Millisecond)
			return reply("OK")
		}
		return reply("+CME ERROR: 30")
	})
	if _, err := a.Command("+SLOW"); err != wat.ErrDeadlineExceeded {
		t.Fatalf("first: %v", err)
	}
	if _, err := a.Command("+CGACT=1,1"); err != nil {
		t.Fatalf("second command got its own answer (%v); gap fixed?", err)
	}
}
