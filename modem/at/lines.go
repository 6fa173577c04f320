// Package at is the line layer of the modem driver: it turns the byte stream
// of an AT port into lines, matches reply lines to the one command in flight,
// routes unsolicited result codes (URCs) to a channel and keeps a late reply
// from answering the next command.
//
// It exists instead of a wrapper around github.com/warthog618/modem/at
// (v0.4.0) because that library's gaps sit inside its read loop, where a
// wrapper cannot reach them: a command that gets "COMMAND NOT SUPPORT", or
// "CONNECT"/"NO CARRIER" when it is not a dial command, ends only by timeout;
// its indication loop hands a matched URC to the handler and then also to the
// in-flight command (the inner `continue` does not skip the send); and after a
// timeout it writes the next command straight away, so a late "OK" answers
// it. Fixing those needs control over line classification and over what is
// written between commands, which is the whole of that package. gaps_test.go
// keeps the evidence: it fails the day upstream fixes them.
package at

import (
	"bytes"
	"io"
)

// MaxLine bounds one line. A modem in a bad state (or a port that is not a
// modem, such as a console spewing a binary) can send any amount of data
// without a newline; past this size the bytes are dropped up to the next line
// end rather than buffered.
const MaxLine = 64 << 10

// LineReader splits an AT byte stream into lines. CR and LF both end a line
// (replies come as "\r\n", echo as "\r", some firmwares send bare "\n"), NUL
// bytes are dropped (USB serial bridges insert them after a reset), blank
// lines are skipped and surrounding white space is trimmed.
type LineReader struct {
	r       io.Reader
	buf     []byte // bytes read but not yet split
	line    []byte // current partial line
	discard bool   // dropping the rest of an overlong line
	// Overlong counts lines dropped for exceeding MaxLine.
	Overlong int
	// OnOverlong, if set, is called when a line starts being dropped.
	OnOverlong func()
}

// NewLineReader returns a LineReader reading from r.
func NewLineReader(r io.Reader) *LineReader {
	return &LineReader{r: r}
}

// Next returns the next non-blank line, or the read error (io.EOF at end).
func (l *LineReader) Next() (string, error) {
	for {
		if s, ok := l.split(); ok {
			return s, nil
		}
		var tmp [4096]byte
		n, err := l.r.Read(tmp[:])
		l.buf = append(l.buf, tmp[:n]...)
		if n == 0 && err != nil {
			return "", err
		}
	}
}

// split consumes l.buf up to the first complete non-blank line.
func (l *LineReader) split() (string, bool) {
	for len(l.buf) > 0 {
		i := bytes.IndexAny(l.buf, "\r\n")
		chunk := l.buf
		if i >= 0 {
			chunk = l.buf[:i]
		}
		if !l.discard {
			for _, c := range chunk {
				if c != 0 {
					l.line = append(l.line, c)
				}
			}
			if len(l.line) > MaxLine {
				l.line = l.line[:0]
				l.discard = true
				l.Overlong++
				if l.OnOverlong != nil {
					l.OnOverlong()
				}
			}
		}
		if i < 0 {
			l.buf = l.buf[:0]
			return "", false
		}
		l.buf = l.buf[i+1:]
		wasDiscarding := l.discard
		l.discard = false
		s := string(bytes.TrimSpace(l.line))
		l.line = l.line[:0]
		if wasDiscarding || s == "" {
			continue
		}
		return s, true
	}
	l.buf = l.buf[:0]
	return "", false
}
