package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// payload is the upload's content: a ChaCha8 stream from a seed, so both
// ends (and a rerun) agree on every byte without storing 1.5 GB anywhere.
func payload(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "lifeline-lab firmware image")
	return rand.NewChaCha8(s)
}

// SendSummary is what `lifeline-lab send` writes to its --out file.
type SendSummary struct {
	BytesSent   int64  `json:"bytes_sent"`
	SHA256      string `json:"sha256"`
	MPTCP       bool   `json:"mptcp"`
	StartNS     int64  `json:"start_ns"`
	WriteDoneNS int64  `json:"write_done_ns"`
	EndNS       int64  `json:"end_ns"`
	// Written is cumulative bytes handed to the socket at the end of each
	// BinNS interval after StartNS (to attribute any loss to a phase).
	BinNS   int64   `json:"bin_ns"`
	Written []int64 `json:"written"`
	// PeerBytes and PeerSHA256 are what the receiver said it got, on the
	// same connection after our FIN: the connection survived end to end.
	PeerBytes  int64  `json:"peer_bytes"`
	PeerSHA256 string `json:"peer_sha256"`
	Error      string `json:"error,omitempty"`
}

// Send uploads size bytes of the seeded stream to addr over one MPTCP
// connection and writes a SendSummary to out. SO_SNDBUF is left to the
// kernel unless sndbuf > 0: the kernel copies it to every subflow, and an
// 8 MB buffer let the LTE subflow swallow megabytes of re-injected
// duplicates on the stock kernel (the re-injection bench sets it to show
// what the patch changes).
func Send(ctx context.Context, addr string, size int64, seed uint64, sndbuf int, cc string, out string, log io.Writer) error {
	s := &SendSummary{BinNS: int64(100 * time.Millisecond)}
	err := send(ctx, addr, size, seed, sndbuf, cc, s, log)
	if err != nil {
		s.Error = err.Error()
	}
	if werr := writeJSONFile(out, s); werr != nil && err == nil {
		err = werr
	}
	return err
}

func send(ctx context.Context, addr string, size int64, seed uint64, sndbuf int, cc string, s *SendSummary, log io.Writer) error {
	var d net.Dialer
	d.Timeout = 10 * time.Second
	d.SetMultipathTCP(true)
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("Dial(mptcp %s): %w", addr, err)
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	if sndbuf > 0 {
		if err := tc.SetWriteBuffer(sndbuf); err != nil {
			return fmt.Errorf("SetWriteBuffer(%d): %w", sndbuf, err)
		}
	}
	if cc != "" {
		// Per socket, not the namespace's default: a namespace other than
		// the host's may only default to the host's allowed list (reno and
		// bbr here), while a root socket may pick any loaded algorithm.
		// MPTCP passes it on to every subflow.
		if err := setCongestion(tc, cc); err != nil {
			return err
		}
	}
	s.MPTCP, _ = tc.MultipathTCP()
	if !s.MPTCP {
		return fmt.Errorf("Dial(mptcp %s): connected, but the kernel fell back to plain TCP", addr)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fmt.Fprintf(log, "send: connected %v -> %v\n", c.LocalAddr(), c.RemoteAddr())
	// The size goes first so that the receiver knows the end without our
	// FIN: it answers on the same connection and then waits for our close,
	// so its socket never goes away while its answer is still in flight.
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return fmt.Errorf("Write(size header): %w", err)
	}
	gen := payload(seed)
	h := sha256.New()
	buf := make([]byte, 128<<10)
	start := time.Now()
	s.StartNS = start.UnixNano()
	for s.BytesSent < size {
		n := int(min(int64(len(buf)), size-s.BytesSent))
		gen.Read(buf[:n])
		h.Write(buf[:n])
		m, err := c.Write(buf[:n])
		s.BytesSent += int64(m)
		bin := int(time.Since(start).Nanoseconds() / s.BinNS)
		for len(s.Written) <= bin {
			s.Written = append(s.Written, s.BytesSent)
		}
		s.Written[bin] = s.BytesSent
		if err != nil {
			s.SHA256 = hex.EncodeToString(h.Sum(nil))
			return fmt.Errorf("Write(after %d bytes): %w", s.BytesSent, err)
		}
	}
	s.SHA256 = hex.EncodeToString(h.Sum(nil))
	s.WriteDoneNS = time.Now().UnixNano()
	var reply [40]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return fmt.Errorf("reading the receiver's digest: %w", err)
	}
	s.EndNS = time.Now().UnixNano()
	s.PeerBytes = int64(binary.BigEndian.Uint64(reply[:8]))
	s.PeerSHA256 = hex.EncodeToString(reply[8:])
	fmt.Fprintf(log, "send: done %d bytes, peer got %d\n", s.BytesSent, s.PeerBytes)
	return nil
}

// Gap is an interval in which the receiver got no new byte.
type Gap struct {
	StartNS int64 `json:"start_ns"`
	EndNS   int64 `json:"end_ns"`
	AtBytes int64 `json:"at_bytes"`
}

// Ms is the gap's length in milliseconds.
func (g Gap) Ms() float64 { return float64(g.EndNS-g.StartNS) / 1e6 }

// RecvSummary is what `lifeline-lab recv` writes to its --out file.
type RecvSummary struct {
	Bytes    int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	MPTCP    bool   `json:"mptcp"`
	AcceptNS int64  `json:"accept_ns"`
	FirstNS  int64  `json:"first_ns"`
	LastNS   int64  `json:"last_ns"`
	// Expected is the size the sender announced; EOF says the sender
	// closed cleanly after reading our digest.
	Expected int64 `json:"expected"`
	EOF      bool  `json:"eof"`
	// Bins holds bytes received per BinNS from AcceptNS.
	BinNS int64   `json:"bin_ns"`
	Bins  []int64 `json:"bins"`
	// Gaps lists every interval of at least MinGapNS between reads that
	// returned data: stalls are measured exactly, not from the bins.
	MinGapNS int64  `json:"min_gap_ns"`
	Gaps     []Gap  `json:"gaps"`
	Error    string `json:"error,omitempty"`
}

// Recv accepts one MPTCP connection on addr, reads the announced number of
// bytes while timing every gap, answers with the byte count and SHA-256 on
// the same connection, waits for the sender's close and writes a
// RecvSummary to out. Progress lines "P <unix-ns> <bytes>" go to progress
// every 20 ms. The listener stays open until Recv returns: closing it after
// accept makes the backup subflow's MP_JOIN get a reset.
func Recv(ctx context.Context, addr, out string, progress io.Writer, log io.Writer) error {
	s := &RecvSummary{BinNS: int64(10 * time.Millisecond), MinGapNS: int64(2 * time.Millisecond)}
	err := recv(ctx, addr, s, progress, log)
	if err != nil {
		s.Error = err.Error()
	}
	if werr := writeJSONFile(out, s); werr != nil && err == nil {
		err = werr
	}
	return err
}

func recv(ctx context.Context, addr string, s *RecvSummary, progress io.Writer, log io.Writer) error {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("Listen(mptcp %s): %w", addr, err)
	}
	defer ln.Close()
	stopLn := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopLn()
	fmt.Fprintf(log, "recv: listening on %s\n", addr)
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("Accept(%s): %w", addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	tc := c.(*net.TCPConn)
	s.MPTCP, _ = tc.MultipathTCP()
	accept := time.Now()
	s.AcceptNS = accept.UnixNano()
	fmt.Fprintf(log, "recv: accepted %v (mptcp %v)\n", c.RemoteAddr(), s.MPTCP)
	pw := bufio.NewWriter(progress)
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("Read(size header): %w", err)
	}
	size := int64(binary.BigEndian.Uint64(hdr[:]))
	s.Expected = size
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var last, lastProgress int64
	for s.Bytes < size {
		n, err := c.Read(buf[:min(int64(len(buf)), size-s.Bytes)])
		if n > 0 {
			now := time.Now().UnixNano()
			if s.Bytes == 0 {
				s.FirstNS = now
			} else if now-last >= s.MinGapNS {
				s.Gaps = append(s.Gaps, Gap{StartNS: last, EndNS: now, AtBytes: s.Bytes})
			}
			last = now
			h.Write(buf[:n])
			s.Bytes += int64(n)
			bin := int((now - s.AcceptNS) / s.BinNS)
			for len(s.Bins) <= bin {
				s.Bins = append(s.Bins, 0)
			}
			s.Bins[bin] += int64(n)
			if now-lastProgress >= int64(20*time.Millisecond) {
				lastProgress = now
				fmt.Fprintf(pw, "P %d %d\n", now, s.Bytes)
				pw.Flush()
			}
		}
		if errors.Is(err, io.EOF) && s.Bytes < size {
			err = fmt.Errorf("%w: the sender closed %d bytes short", io.ErrUnexpectedEOF, size-s.Bytes)
		}
		if err != nil {
			s.LastNS = last
			s.SHA256 = hex.EncodeToString(h.Sum(nil))
			return fmt.Errorf("Read(after %d bytes): %w", s.Bytes, err)
		}
	}
	s.LastNS = last
	sum := h.Sum(nil)
	s.SHA256 = hex.EncodeToString(sum)
	var reply [40]byte
	binary.BigEndian.PutUint64(reply[:8], uint64(s.Bytes))
	copy(reply[8:], sum)
	if _, err := c.Write(reply[:]); err != nil {
		return fmt.Errorf("Write(digest): %w", err)
	}
	// Wait for the sender's close: it has our answer then.
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if n, err := c.Read(buf[:1]); n > 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("waiting for the sender's close after the digest: read %d bytes, %v", n, err)
	}
	s.EOF = true
	fmt.Fprintf(pw, "P %d %d\nDONE\n", time.Now().UnixNano(), s.Bytes)
	pw.Flush()
	fmt.Fprintf(log, "recv: done %d bytes sha256 %s\n", s.Bytes, s.SHA256)
	return nil
}

func writeJSONFile(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("WriteFile(%s): %w", path, err)
	}
	return nil
}

func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// setCongestion sets the socket's TCP_CONGESTION.
func setCongestion(c *net.TCPConn, cc string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("SyscallConn: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
	}); err != nil {
		return fmt.Errorf("Control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("setsockopt(TCP_CONGESTION, %q): %w", cc, serr)
	}
	return nil
}
