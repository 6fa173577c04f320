package at

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("AT+CSQ\r\r\n+CSQ: 18,99\r\n\r\nOK\r\n"))
	f.Add([]byte("RDATE0Q0V1\r\r\nOK\r\n"))
	f.Add([]byte("\x00\x00\xffgarbage\r\nOK"))
	f.Add([]byte("!GSTATUS: \r\nSystem mode:   LTE        \tPS state:    Attached     \r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lr := NewLineReader(bytes.NewReader(data))
		total := 0
		for {
			l, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if l == "" || strings.ContainsAny(l, "\r\n\x00") || len(l) > MaxLine {
				t.Fatalf("bad line %q", l)
			}
			if l != strings.TrimSpace(l) {
				t.Fatalf("untrimmed %q", l)
			}
			total += len(l)
		}
		if total > len(data) {
			t.Fatalf("lines hold %d bytes from %d", total, len(data))
		}
	})
}

func FuzzFinalResult(f *testing.F) {
	for _, s := range []string{"OK", "ERROR", "+CME ERROR: 10", "COMMAND NOT SUPPORT", "CONNECT", "+CSQ: 1,2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		done, err := finalResult(s)
		if err != nil && !done {
			t.Fatalf("%q: error without done", s)
		}
	})
}
