// Package dhcp4test runs a small real DHCPv4 server (the insomniacslk
// server4 package) inside a network namespace, for tests that need lease
// times far below dnsmasq's two-minute floor, a server that falls silent
// or one that NAKs on demand. It also runs in the VM stage, where no
// dnsmasq binary is around.
package dhcp4test

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"
)

// Mode is how the server answers.
type Mode int

const (
	Serve  Mode = iota // OFFER/ACK normally
	Silent             // answer nothing (server down)
	NAK                // NAK every REQUEST
)

// Options for Start.
type Options struct {
	NetNS    netns.NsHandle // where the server's socket lives (closed: caller's)
	Iface    string         // interface to serve on (already addressed)
	ServerIP netip.Addr     // our address on Iface (server identifier)
	Prefix   int            // subnet mask length handed out
	Pool     netip.Addr     // first address handed out; one per client MAC
	Router   netip.Addr     // option 3 (invalid: none)
	Lease    time.Duration  // option 51
	T1, T2   time.Duration  // options 58/59 (0: absent, client defaults)
}

// Msg is one message the server received.
type Msg struct {
	Type      dhcpv4.MessageType
	MAC       string
	CIAddr    netip.Addr // set when RENEWING/REBINDING
	Requested netip.Addr // option 50 (SELECTING, INIT-REBOOT)
	ServerID  netip.Addr // option 54 (SELECTING only)
	Reply     dhcpv4.MessageType
	At        time.Time
}

// Server is a running test server.
type Server struct {
	o   Options
	srv *server4.Server
	wg  sync.WaitGroup

	mu    sync.Mutex
	mode  Mode
	log   []Msg
	byMAC map[string]netip.Addr
	next  netip.Addr
}

// Start opens the server's socket in o.NetNS and serves until Close.
func Start(o Options) (*Server, error) {
	s := &Server{o: o, byMAC: map[string]netip.Addr{}, next: o.Pool}
	var conn *net.UDPConn
	err := inNetNS(o.NetNS, func() error {
		var err error
		conn, err = server4.NewIPv4UDPConn(o.Iface, &net.UDPAddr{Port: dhcpv4.ServerPort})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dhcp4test: socket on %s: %w", o.Iface, err)
	}
	s.srv, err = server4.NewServer("", nil, s.handle, server4.WithConn(conn))
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.srv.Serve() }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close(); s.wg.Wait() }

// SetMode changes how the server answers from now on.
func (s *Server) SetMode(m Mode) { s.mu.Lock(); s.mode = m; s.mu.Unlock() }

// Log returns what the server received so far.
func (s *Server) Log() []Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Msg(nil), s.log...)
}

func addr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	if a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

func (s *Server) handle(conn net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
	if m.OpCode != dhcpv4.OpcodeBootRequest {
		return
	}
	mac := m.ClientHWAddr.String()
	rec := Msg{Type: m.MessageType(), MAC: mac, CIAddr: addr(m.ClientIPAddr),
		Requested: addr(m.RequestedIPAddress()), ServerID: addr(m.ServerIdentifier()), At: time.Now()}
	s.mu.Lock()
	mode := s.mode
	ip, ok := s.byMAC[mac]
	if !ok {
		ip = s.next
		s.byMAC[mac] = ip
		s.next = s.next.Next()
	}
	var reply dhcpv4.MessageType
	switch {
	case mode == Silent:
	case rec.Type == dhcpv4.MessageTypeDiscover:
		reply = dhcpv4.MessageTypeOffer
	case rec.Type == dhcpv4.MessageTypeRequest && mode == NAK:
		reply = dhcpv4.MessageTypeNak
	case rec.Type == dhcpv4.MessageTypeRequest:
		want := rec.Requested
		if rec.CIAddr.IsValid() {
			want = rec.CIAddr
		}
		if rec.ServerID.IsValid() && rec.ServerID != s.o.ServerIP {
			break // the client chose another server
		}
		if want == ip {
			reply = dhcpv4.MessageTypeAck
		} else {
			reply = dhcpv4.MessageTypeNak
		}
	}
	rec.Reply = reply
	s.log = append(s.log, rec)
	s.mu.Unlock()
	if reply == dhcpv4.MessageTypeNone {
		return
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(reply),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.o.ServerIP.AsSlice())),
		dhcpv4.WithBroadcast(true),
	}
	if reply != dhcpv4.MessageTypeNak {
		mods = append(mods,
			dhcpv4.WithYourIP(ip.AsSlice()),
			dhcpv4.WithNetmask(net.CIDRMask(s.o.Prefix, 32)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.o.Lease)))
		if s.o.Router.IsValid() {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(s.o.Router.AsSlice())))
		}
		if s.o.T1 > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(s.o.T1)))
		}
		if s.o.T2 > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(s.o.T2)))
		}
	} else {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptMessage("address not yours")))
	}
	resp, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		return
	}
	// Always broadcast: the client listens on a raw socket and may not
	// have the address configured yet.
	conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
}

func inNetNS(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return err // thread stays locked and is retired
	}
	runtime.UnlockOSThread()
	return ferr
}
