package mptcp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond until it returns "" or the deadline passes; the last
// complaint is the failure message.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting %v for %s: %s", timeout, what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ssPairs lists "local peer" of the established TCP sockets in ns as ss(8)
// sees them; MPTCP subflows are TCP sockets, the MPTCP sockets themselves
// are not listed by -t.
func ssPairs(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command(ipBin, "netns", "exec", ns, "ss", "-Htn", "state", "established").Output()
	if err != nil {
		t.Fatalf("ss -Htn in %s: %v", ns, err)
	}
	var pairs []string
	for _, line := range strings.Split(strings.TrimSpace(out2s(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		// Recv-Q Send-Q Local Peer
		pairs = append(pairs, f[2]+" "+f[3])
	}
	sort.Strings(pairs)
	return pairs
}

func out2s(b []byte) string { return string(b) }

func subflowPairs(sfs []Subflow) []string {
	var pairs []string
	for _, s := range sfs {
		if s.State == StateEstablished {
			pairs = append(pairs, s.Local.String()+" "+s.Remote.String())
		}
	}
	sort.Strings(pairs)
	return pairs
}

func fmtSubflows(sfs []Subflow) string {
	var b strings.Builder
	for _, s := range sfs {
		fmt.Fprintf(&b, "\n\t%v -> %v %v token %08x/%08x ids %d/%d backup loc=%v rem=%v",
			s.Local, s.Remote, s.State, s.Token, s.RemoteToken, s.LocalID, s.RemoteID, s.BackupLocal, s.BackupRemote)
	}
	return b.String()
}

// TestSubflows runs a real MPTCP connection between two namespaces joined
// by a veth pair; the client has a second, backup endpoint, so the kernel
// opens a second subflow from it.
func TestSubflows(t *testing.T) {
	requireNetNS(t)
	cli, srv := newNetNS(t), newNetNS(t)
	ip(t, cli, "link", "add", "cv", "type", "veth", "peer", "name", "sv", "netns", srv)
	ip(t, cli, "addr", "add", "10.1.1.1/24", "dev", "cv")
	ip(t, cli, "addr", "add", "10.1.2.1/24", "dev", "cv")
	ip(t, cli, "link", "set", "cv", "up")
	ip(t, srv, "addr", "add", "10.1.1.2/24", "dev", "sv")
	ip(t, srv, "addr", "add", "10.1.2.2/24", "dev", "sv")
	ip(t, srv, "link", "set", "sv", "up")

	cc, sc := dialIn(t, cli), dialIn(t, srv)
	for _, c := range []*Client{cc, sc} {
		if err := c.SetLimits(Limits{Subflows: 2, AddAddrAccepted: 2}); err != nil {
			t.Fatal(err)
		}
	}
	backupAddr := netip.MustParseAddr("10.1.2.1")
	ep, err := cc.EnsureEndpoint(Endpoint{Addr: backupAddr, Flags: FlagSubflow | FlagBackup})
	if err != nil {
		t.Fatal(err)
	}

	var ln net.Listener
	inNetNS(t, srv, func() {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		ln, err = lc.Listen(context.Background(), "tcp4", "10.1.1.2:0")
	})
	if err != nil {
		t.Fatal(err)
	}
	// The listener stays open for the whole test: closing it would make the
	// kernel reset later MP_JOINs.
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
		io.Copy(io.Discard, c)
	}()

	var conn net.Conn
	inNetNS(t, cli, func() {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(10, 1, 1, 1)}, Timeout: 5 * time.Second}
		d.SetMultipathTCP(true)
		conn, err = d.Dial("tcp4", ln.Addr().String())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if mp, err := conn.(*net.TCPConn).MultipathTCP(); err != nil || !mp {
		t.Fatalf("connection fell back to plain TCP (MultipathTCP() = %v, %v)", mp, err)
	}
	srvConn, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { srvConn.Close() })
	if _, err := conn.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}

	var cliSfs, srvSfs []Subflow
	waitFor(t, "a backup subflow from 10.1.2.1 on both ends", 10*time.Second, func() string {
		var err error
		if cliSfs, err = cc.Subflows(); err != nil {
			t.Fatal(err)
		}
		if srvSfs, err = sc.Subflows(); err != nil {
			t.Fatal(err)
		}
		if len(cliSfs) != 2 || len(srvSfs) != 2 {
			return fmt.Sprintf("client:%s\nserver:%s", fmtSubflows(cliSfs), fmtSubflows(srvSfs))
		}
		for _, s := range append(cliSfs, srvSfs...) {
			if s.State != StateEstablished || !s.FullyEstablished {
				return "not (fully) established:" + fmtSubflows([]Subflow{s})
			}
		}
		return ""
	})

	// Both subflows belong to the one connection; only the one from the
	// backup endpoint is backup, marked by us on the client and by the
	// peer (MP_JOIN B bit) on the server.
	if cliSfs[0].Token != cliSfs[1].Token || cliSfs[0].Token == 0 {
		t.Errorf("client subflows with different tokens:%s", fmtSubflows(cliSfs))
	}
	if srvSfs[0].Token != srvSfs[1].Token || srvSfs[0].Token == 0 {
		t.Errorf("server subflows with different tokens:%s", fmtSubflows(srvSfs))
	}
	for _, s := range cliSfs {
		// MP_JOIN carries the peer's token, so the join subflow must know
		// it; the initial subflow may still report 0.
		join := s.Local.Addr() == backupAddr
		if (join || s.RemoteToken != 0) && s.RemoteToken != srvSfs[0].Token {
			t.Errorf("client subflow %v: remote token %08x, server's token %08x", s.Local, s.RemoteToken, srvSfs[0].Token)
		}
	}
	for _, s := range cliSfs {
		fromBackup := s.Local.Addr() == backupAddr
		if s.Backup != fromBackup || s.BackupLocal != fromBackup {
			t.Errorf("client subflow %v: Backup=%v BackupLocal=%v, want %v", s.Local, s.Backup, s.BackupLocal, fromBackup)
		}
		if fromBackup && s.LocalID != ep.ID {
			t.Errorf("client subflow %v: LocalID %d, want endpoint id %d", s.Local, s.LocalID, ep.ID)
		}
		if !fromBackup && s.LocalID != 0 {
			t.Errorf("initial subflow %v: LocalID %d, want 0", s.Local, s.LocalID)
		}
	}
	for _, s := range srvSfs {
		fromBackup := s.Remote.Addr() == backupAddr
		if s.Backup != fromBackup || s.BackupRemote != fromBackup {
			t.Errorf("server subflow from %v: Backup=%v BackupRemote=%v, want %v", s.Remote, s.Backup, s.BackupRemote, fromBackup)
		}
	}
	if got, want := subflowPairs(cliSfs), ssPairs(t, cli); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("client: Subflows() %v, ss shows %v", got, want)
	}
	if got, want := subflowPairs(srvSfs), ssPairs(t, srv); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("server: Subflows() %v, ss shows %v", got, want)
	}

	// Flipping backup on a live endpoint sends MP_PRIO: the subflow stays
	// and both ends see the new priority.
	if err := cc.SetFlags(Endpoint{ID: ep.ID, Flags: FlagSubflow}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "MP_PRIO to clear backup on both ends", 5*time.Second, func() string {
		var err error
		if cliSfs, err = cc.Subflows(); err != nil {
			t.Fatal(err)
		}
		if srvSfs, err = sc.Subflows(); err != nil {
			t.Fatal(err)
		}
		if len(cliSfs) != 2 || len(srvSfs) != 2 {
			return "subflow count changed:" + fmtSubflows(cliSfs) + fmtSubflows(srvSfs)
		}
		for _, s := range append(cliSfs, srvSfs...) {
			if s.Backup {
				return "still backup:" + fmtSubflows([]Subflow{s})
			}
		}
		return ""
	})

	// The server aborts the subflows from the backup address (what the
	// concentrator does to a path reported dead); the connection lives on.
	n, err := sc.DestroySubflows(backupAddr)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("DestroySubflows(%v) = %d, want 1", backupAddr, n)
	}
	waitFor(t, "the server's subflow from the backup address to go", 5*time.Second, func() string {
		sfs, err := sc.Subflows()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sfs {
			if s.Remote.Addr() == backupAddr && s.State == StateEstablished {
				return "server:" + fmtSubflows(sfs)
			}
		}
		return ""
	})
	if _, err := conn.Write(make([]byte, 64<<10)); err != nil {
		t.Fatalf("write after SOCK_DESTROY: %v", err)
	}
	if n, err := sc.DestroySubflows(netip.MustParseAddr("192.0.2.99")); err != nil || n != 0 {
		t.Fatalf("DestroySubflows(unknown peer) = %d, %v; want 0, nil", n, err)
	}

	// Deleting the endpoint closes its subflow at once; the connection
	// lives on over the initial one.
	if err := cc.DelEndpoint(ep.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subflow from the deleted endpoint to close", 5*time.Second, func() string {
		sfs, err := cc.Subflows()
		if err != nil {
			t.Fatal(err)
		}
		var est []Subflow
		for _, s := range sfs {
			if s.State == StateEstablished {
				est = append(est, s)
			}
		}
		if len(est) != 1 || est[0].Local.Addr() == backupAddr {
			return "client:" + fmtSubflows(sfs)
		}
		return ""
	})
	if _, err := conn.Write(make([]byte, 64<<10)); err != nil {
		t.Fatalf("write after endpoint removal: %v", err)
	}
}
