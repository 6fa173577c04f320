// Package mptcp drives the kernel's in-kernel MPTCP path manager (the
// "mptcp_pm" generic-netlink family) and lists MPTCP subflows over sock_diag.
//
// It exists because failover must remove a dead uplink's endpoint within a
// millisecond or two of detection: forking `ip mptcp endpoint delete` costs
// 25–70 ms under load, and no Go library speaks mptcp_pm. The supervisor uses
// it to install one endpoint per uplink tunnel (subflow, plus backup for LTE),
// to set the limits, to flip backup flags, and to report subflows as metrics.
//
// All calls act on the network namespace the Client was dialled in. The
// kernel requires CAP_NET_ADMIN for every command except GET_LIMITS.
package mptcp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Flags are an endpoint's MPTCP_PM_ADDR_FLAG_* bits, with the kernel's values.
type Flags uint32

const (
	// FlagSignal announces the address to the peer (ADD_ADDR).
	FlagSignal Flags = 1 << 0
	// FlagSubflow makes this host open a subflow from the address.
	FlagSubflow Flags = 1 << 1
	// FlagBackup asks the peer to use subflows from the address only when no
	// non-backup subflow is usable.
	FlagBackup Flags = 1 << 2
	// FlagFullmesh opens a subflow from the address to every peer address.
	FlagFullmesh Flags = 1 << 3
	// FlagImplicit marks an endpoint the kernel created on its own for an
	// address a subflow used; userspace cannot create one.
	FlagImplicit Flags = 1 << 4
)

var flagNames = []struct {
	f    Flags
	name string
}{
	{FlagSignal, "signal"},
	{FlagSubflow, "subflow"},
	{FlagBackup, "backup"},
	{FlagFullmesh, "fullmesh"},
	{FlagImplicit, "implicit"},
}

// String lists the flags as `ip mptcp endpoint show` does, e.g. "subflow backup";
// it returns "none" for no flags and a hex value for unknown bits.
func (f Flags) String() string {
	if f == 0 {
		return "none"
	}
	var parts []string
	for _, n := range flagNames {
		if f&n.f != 0 {
			parts = append(parts, n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(uint64(f), 16))
	}
	return strings.Join(parts, " ")
}

// ParseFlags parses space- or comma-separated flag names as printed by
// Flags.String and by `ip mptcp endpoint show` ("subflow backup").
// "none" and the empty string mean no flags.
func ParseFlags(s string) (Flags, error) {
	var f Flags
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
		if w == "none" {
			continue
		}
		found := false
		for _, n := range flagNames {
			if w == n.name {
				f |= n.f
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("mptcp: unknown endpoint flag %q in %q (want signal, subflow, backup, fullmesh)", w, s)
		}
	}
	return f, nil
}

// Endpoint is one entry of the in-kernel path manager's address list.
type Endpoint struct {
	ID      uint8      // 0 on add: the kernel picks one
	Addr    netip.Addr // local address
	Port    uint16     // only with FlagSignal and without FlagSubflow (kernel rule)
	Flags   Flags
	IfIndex int // 0: any device
}

// String formats the endpoint like `ip mptcp endpoint show`.
func (e Endpoint) String() string {
	var b strings.Builder
	if e.Addr.IsValid() {
		b.WriteString(e.Addr.String())
	} else {
		b.WriteString("<no addr>")
	}
	if e.Port != 0 {
		fmt.Fprintf(&b, " port %d", e.Port)
	}
	fmt.Fprintf(&b, " id %d %s", e.ID, e.Flags)
	if e.IfIndex != 0 {
		fmt.Fprintf(&b, " ifindex %d", e.IfIndex)
	}
	return b.String()
}

// Limits are the per-namespace path-manager limits (`ip mptcp limits`).
type Limits struct {
	Subflows        uint32 // additional subflows per connection (kernel max 8)
	AddAddrAccepted uint32 // ADD_ADDRs accepted from the peer per connection (kernel max 8)
}

func (l Limits) String() string {
	return fmt.Sprintf("subflows %d add_addr_accepted %d", l.Subflows, l.AddAddrAccepted)
}

// ErrNotFound is wrapped in errors for an endpoint id or address the kernel
// does not know (the kernel itself says EINVAL "address not found").
var ErrNotFound = errors.New("endpoint not found")

// Client talks to the mptcp_pm generic-netlink family and to sock_diag in
// one network namespace. It is safe for concurrent use; EnsureEndpoint is
// not atomic against other writers of the same namespace.
type Client struct {
	c      *genetlink.Conn
	family genetlink.Family

	diagMu  sync.Mutex
	diag    *netlink.Conn // nil if sock_diag could not be opened
	diagErr error
}

// Dial opens a Client in the calling thread's network namespace. Callers
// that switched namespaces must hold runtime.LockOSThread across Dial;
// afterwards the sockets stay in that namespace from any thread.
func Dial() (*Client, error) {
	return dial(0)
}

// DialNetNS opens a Client in the network namespace referred to by the file
// descriptor nsFD (e.g. an open /run/netns/NAME), without touching the
// calling thread's namespace.
func DialNetNS(nsFD int) (*Client, error) {
	if nsFD <= 0 {
		return nil, fmt.Errorf("mptcp: DialNetNS(%d): invalid namespace file descriptor", nsFD)
	}
	return dial(nsFD)
}

func dial(nsFD int) (*Client, error) {
	cfg := &netlink.Config{NetNS: nsFD}
	c, err := genetlink.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("mptcp: dial generic netlink: %w", err)
	}
	// Extended acks carry the kernel's reason ("address not found",
	// "flags must have signal and not subflow when using port"), which is
	// what a person on a serial console needs; old kernels lack the option.
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	fam, err := c.GetFamily(familyName)
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("mptcp: GetFamily(%q): kernel has no MPTCP path manager (CONFIG_MPTCP off?): %w", familyName, err)
		}
		return nil, fmt.Errorf("mptcp: GetFamily(%q): %w", familyName, err)
	}
	cl := &Client{c: c, family: fam}
	// The sock_diag socket is opened now so it lives in the same namespace;
	// a failure only disables Subflows.
	cl.diag, cl.diagErr = netlink.Dial(unixNetlinkSockDiag, cfg)
	if cl.diagErr != nil {
		cl.diagErr = fmt.Errorf("mptcp: dial sock_diag: %w", cl.diagErr)
	}
	return cl, nil
}

// Close releases the netlink sockets.
func (c *Client) Close() error {
	err := c.c.Close()
	c.diagMu.Lock()
	if c.diag != nil {
		if derr := c.diag.Close(); err == nil {
			err = derr
		}
		c.diag = nil
		c.diagErr = errors.New("mptcp: client closed")
	}
	c.diagMu.Unlock()
	return err
}
