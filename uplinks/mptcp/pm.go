package mptcp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Values from include/uapi/linux/mptcp_pm.h (generated from
// Documentation/netlink/specs/mptcp_pm.yaml); x/sys/unix does not carry them.
const (
	familyName = "mptcp_pm"

	cmdAddAddr    = 1
	cmdDelAddr    = 2
	cmdGetAddr    = 3
	cmdFlushAddrs = 4
	cmdSetLimits  = 5
	cmdGetLimits  = 6
	cmdSetFlags   = 7

	attrAddr        = 1 // nested MPTCP_PM_ADDR_ATTR_*
	attrRcvAddAddrs = 2 // u32
	attrSubflows    = 3 // u32

	addrAttrFamily = 1 // u16
	addrAttrID     = 2 // u8
	addrAttrAddr4  = 3 // struct in_addr, network order
	addrAttrAddr6  = 4 // struct in6_addr
	addrAttrPort   = 5 // u16, host order (the kernel htons()es it)
	addrAttrFlags  = 6 // u32
	addrAttrIfIdx  = 7 // s32

	// maxLimit is MPTCP_PM_ADDR_MAX in net/mptcp/pm_kernel.c: the kernel
	// rejects larger limits with EINVAL.
	maxLimit = 8

	unixNetlinkSockDiag = unix.NETLINK_SOCK_DIAG
)

// execute runs one mptcp_pm command. Commands without a reply need
// NLM_F_ACK, or success would be silent and an error would surface on the
// next unrelated request; commands with a reply (GET_*) must not set it,
// because the ack then arrives as a second datagram that the next request
// would read as its answer.
func (c *Client) execute(cmd uint8, attrs []byte, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	msg := genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: c.family.Version},
		Data:   attrs,
	}
	msgs, err := c.c.Execute(msg, c.family.ID, netlink.Request|flags)
	if err != nil {
		var oe *netlink.OpError
		if errors.As(err, &oe) && oe.Message == "address not found" {
			return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, err
	}
	return msgs, nil
}

// checkAddr validates what the kernel would otherwise reject with a bare
// EINVAL and returns the address in the form the kernel stores.
func checkAddr(e Endpoint) (netip.Addr, error) {
	if !e.Addr.IsValid() {
		return netip.Addr{}, errors.New("Addr: missing address")
	}
	a := e.Addr.WithZone("").Unmap()
	if a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("Addr: %v is unspecified", a)
	}
	if e.IfIndex < 0 || int64(e.IfIndex) > int64(^uint32(0)>>1) {
		return netip.Addr{}, fmt.Errorf("IfIndex: %d out of range", e.IfIndex)
	}
	return a, nil
}

// checkFlags applies the kernel's ADD_ADDR rules (mptcp_pm_nl_add_addr_doit)
// up front, so EnsureEndpoint fails before it deletes anything.
func checkFlags(e Endpoint) error {
	switch {
	case e.Flags&FlagImplicit != 0:
		return errors.New("Flags: the kernel cannot create implicit endpoints")
	case e.Flags&FlagSignal != 0 && e.Flags&FlagFullmesh != 0:
		return errors.New("Flags: signal and fullmesh exclude each other")
	case e.Port != 0 && e.Flags&(FlagSignal|FlagSubflow) != FlagSignal:
		return fmt.Errorf("Port: %d needs flag signal without subflow", e.Port)
	}
	return nil
}

// encodeAddr writes the nested MPTCP_PM_ATTR_ADDR. The ID attribute is only
// sent when non-zero: its mere presence tells ADD_ADDR "do not pick an id".
func encodeAddr(ae *netlink.AttributeEncoder, e Endpoint, withAddr, withFlags bool) {
	ae.Nested(attrAddr, func(nae *netlink.AttributeEncoder) error {
		if e.ID != 0 {
			nae.Uint8(addrAttrID, e.ID)
		}
		if withAddr {
			a := e.Addr.WithZone("").Unmap()
			if a.Is4() {
				nae.Uint16(addrAttrFamily, unix.AF_INET)
				b := a.As4()
				nae.Bytes(addrAttrAddr4, b[:])
			} else {
				nae.Uint16(addrAttrFamily, unix.AF_INET6)
				b := a.As16()
				nae.Bytes(addrAttrAddr6, b[:])
			}
			if e.Port != 0 {
				nae.Uint16(addrAttrPort, e.Port)
			}
			if e.IfIndex != 0 {
				nae.Int32(addrAttrIfIdx, int32(e.IfIndex))
			}
		}
		if withFlags {
			nae.Uint32(addrAttrFlags, uint32(e.Flags))
		}
		return nil
	})
}

// decodeEndpoint parses the attributes of one GET_ADDR reply.
func decodeEndpoint(b []byte) (Endpoint, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Endpoint{}, err
	}
	var e Endpoint
	found := false
	for ad.Next() {
		if ad.Type() != attrAddr {
			continue
		}
		found = true
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			var family uint16
			var a4, a6 []byte
			for nad.Next() {
				switch nad.Type() {
				case addrAttrFamily:
					family = nad.Uint16()
				case addrAttrID:
					e.ID = nad.Uint8()
				case addrAttrAddr4:
					a4 = nad.Bytes()
				case addrAttrAddr6:
					a6 = nad.Bytes()
				case addrAttrPort:
					e.Port = nad.Uint16()
				case addrAttrFlags:
					e.Flags = Flags(nad.Uint32())
				case addrAttrIfIdx:
					e.IfIndex = int(nad.Int32())
				}
			}
			switch {
			case family == unix.AF_INET && len(a4) == 4:
				e.Addr = netip.AddrFrom4([4]byte(a4))
			case family == unix.AF_INET6 && len(a6) == 16:
				e.Addr = netip.AddrFrom16([16]byte(a6))
			default:
				return fmt.Errorf("endpoint id %d: family %d with addr4 %d bytes, addr6 %d bytes", e.ID, family, len(a4), len(a6))
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return Endpoint{}, err
	}
	if !found {
		return Endpoint{}, errors.New("reply without MPTCP_PM_ATTR_ADDR")
	}
	return e, nil
}

// Endpoints lists the namespace's endpoints in id order (GET_ADDR dump).
func (c *Client) Endpoints() ([]Endpoint, error) {
	msgs, err := c.execute(cmdGetAddr, nil, netlink.Dump)
	if err != nil {
		return nil, fmt.Errorf("mptcp: GET_ADDR(dump): %w", err)
	}
	eps := make([]Endpoint, 0, len(msgs))
	for _, m := range msgs {
		e, err := decodeEndpoint(m.Data)
		if err != nil {
			return nil, fmt.Errorf("mptcp: GET_ADDR(dump): %w", err)
		}
		eps = append(eps, e)
	}
	return eps, nil
}

// Endpoint returns the endpoint with the given id; errors.Is(err,
// ErrNotFound) when there is none.
func (c *Client) Endpoint(id uint8) (Endpoint, error) {
	if id == 0 {
		return Endpoint{}, fmt.Errorf("mptcp: GET_ADDR(id 0): id 0 names each connection's initial subflow address, not an endpoint")
	}
	ae := netlink.NewAttributeEncoder()
	encodeAddr(ae, Endpoint{ID: id}, false, false)
	b, err := ae.Encode()
	if err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: GET_ADDR(id %d): %w", id, err)
	}
	msgs, err := c.execute(cmdGetAddr, b, 0)
	if err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: GET_ADDR(id %d): %w", id, err)
	}
	if len(msgs) != 1 {
		return Endpoint{}, fmt.Errorf("mptcp: GET_ADDR(id %d): %d replies, want 1", id, len(msgs))
	}
	e, err := decodeEndpoint(msgs[0].Data)
	if err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: GET_ADDR(id %d): %w", id, err)
	}
	return e, nil
}

// AddEndpoint adds e; e.ID 0 lets the kernel pick the id. The kernel does
// not report the id it picked: look it up with Endpoints or use
// EnsureEndpoint.
func (c *Client) AddEndpoint(e Endpoint) error {
	if _, err := checkAddr(e); err != nil {
		return fmt.Errorf("mptcp: ADD_ADDR(%v): %w", e, err)
	}
	if err := checkFlags(e); err != nil {
		return fmt.Errorf("mptcp: ADD_ADDR(%v): %w", e, err)
	}
	ae := netlink.NewAttributeEncoder()
	encodeAddr(ae, e, true, true)
	b, err := ae.Encode()
	if err == nil {
		_, err = c.execute(cmdAddAddr, b, netlink.Acknowledge)
	}
	if err != nil {
		return fmt.Errorf("mptcp: ADD_ADDR(%v): %w", e, err)
	}
	return nil
}

// DelEndpoint removes the endpoint with the given id; the kernel closes the
// subflows that use its address at once. errors.Is(err, ErrNotFound) when
// there is no such endpoint.
//
// Timing: the kernel closes the subflows first and then waits for an RCU
// grace period before it acks (synchronize_rcu in
// mptcp_pm_nl_del_addr_doit), so the call returns ~10 ms after the subflows
// are gone (BenchmarkDelEndpoint). A failover path should not serialise
// other netlink work behind it on the same Client.
func (c *Client) DelEndpoint(id uint8) error {
	// The kernel treats id 0 as "the initial subflow's address of every
	// connection" and silently succeeds: never what a caller means here.
	if id == 0 {
		return fmt.Errorf("mptcp: DEL_ADDR(id 0): id 0 is not an endpoint id")
	}
	ae := netlink.NewAttributeEncoder()
	encodeAddr(ae, Endpoint{ID: id}, false, false)
	b, err := ae.Encode()
	if err == nil {
		_, err = c.execute(cmdDelAddr, b, netlink.Acknowledge)
	}
	if err != nil {
		return fmt.Errorf("mptcp: DEL_ADDR(id %d): %w", id, err)
	}
	return nil
}

// FlushEndpoints removes all endpoints of the namespace and closes the
// subflows that used them.
func (c *Client) FlushEndpoints() error {
	if _, err := c.execute(cmdFlushAddrs, nil, netlink.Acknowledge); err != nil {
		return fmt.Errorf("mptcp: FLUSH_ADDRS: %w", err)
	}
	return nil
}

// SetFlags changes the backup and fullmesh flags of an existing endpoint,
// found by e.ID when non-zero, else by e.Addr (and e.Port). Other flags in
// e.Flags are ignored by the kernel. Changing backup sends MP_PRIO on every
// subflow from that address.
func (c *Client) SetFlags(e Endpoint) error {
	byAddr := e.ID == 0
	if byAddr {
		if _, err := checkAddr(e); err != nil {
			return fmt.Errorf("mptcp: SET_FLAGS(%v): %w", e, err)
		}
	}
	ae := netlink.NewAttributeEncoder()
	// The kernel looks an endpoint up by id only when no family is sent.
	encodeAddr(ae, Endpoint{ID: e.ID, Addr: e.Addr, Port: e.Port, Flags: e.Flags}, byAddr, true)
	b, err := ae.Encode()
	if err == nil {
		_, err = c.execute(cmdSetFlags, b, netlink.Acknowledge)
	}
	if err != nil {
		return fmt.Errorf("mptcp: SET_FLAGS(%v): %w", e, err)
	}
	return nil
}

// Limits returns the namespace's path-manager limits.
func (c *Client) Limits() (Limits, error) {
	msgs, err := c.execute(cmdGetLimits, nil, 0)
	if err != nil {
		return Limits{}, fmt.Errorf("mptcp: GET_LIMITS: %w", err)
	}
	if len(msgs) != 1 {
		return Limits{}, fmt.Errorf("mptcp: GET_LIMITS: %d replies, want 1", len(msgs))
	}
	ad, err := netlink.NewAttributeDecoder(msgs[0].Data)
	if err != nil {
		return Limits{}, fmt.Errorf("mptcp: GET_LIMITS: %w", err)
	}
	var l Limits
	var seen int
	for ad.Next() {
		switch ad.Type() {
		case attrRcvAddAddrs:
			l.AddAddrAccepted = ad.Uint32()
			seen++
		case attrSubflows:
			l.Subflows = ad.Uint32()
			seen++
		}
	}
	if err := ad.Err(); err != nil {
		return Limits{}, fmt.Errorf("mptcp: GET_LIMITS: %w", err)
	}
	if seen != 2 {
		return Limits{}, fmt.Errorf("mptcp: GET_LIMITS: reply lacks a limit attribute")
	}
	return l, nil
}

// EnsureLimits sets the limits to l unless they already are: applying the
// same config twice writes nothing (the router and the concentrator both
// apply theirs at start).
func (c *Client) EnsureLimits(l Limits) error {
	if cur, err := c.Limits(); err == nil && cur == l {
		return nil
	}
	return c.SetLimits(l)
}

// SetLimits sets both limits (each at most 8, the kernel's maximum).
func (c *Client) SetLimits(l Limits) error {
	if l.Subflows > maxLimit {
		return fmt.Errorf("mptcp: SET_LIMITS(%v): Subflows: %d above the kernel's maximum %d", l, l.Subflows, maxLimit)
	}
	if l.AddAddrAccepted > maxLimit {
		return fmt.Errorf("mptcp: SET_LIMITS(%v): AddAddrAccepted: %d above the kernel's maximum %d", l, l.AddAddrAccepted, maxLimit)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(attrRcvAddAddrs, l.AddAddrAccepted)
	ae.Uint32(attrSubflows, l.Subflows)
	b, err := ae.Encode()
	if err == nil {
		_, err = c.execute(cmdSetLimits, b, netlink.Acknowledge)
	}
	if err != nil {
		return fmt.Errorf("mptcp: SET_LIMITS(%v): %w", l, err)
	}
	return nil
}
