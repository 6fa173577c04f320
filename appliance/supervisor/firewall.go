package supervisor

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// FirewallTable is the router's own nftables table.
const FirewallTable = "lifeline_router"

// applyFirewall drops every TCP connection attempt that arrives on an
// uplink device. Nothing of ours listens on an uplink (the tunnels are
// UDP the router initiates), but gokrazy's update API listens on every
// private and link-local address, and an uplink has such addresses (CGNAT
// LTE, an ONT's LAN, IPv6 link-local): without this, the update password
// prompt would face the ISP. The table is replaced as a whole in one
// netlink batch, so applying it twice changes nothing. It is a netlink
// implementation (google/nftables) because the image has no nft binary.
func applyFirewall(devices []string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables.New: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: FirewallTable}
	// Deleting a missing table fails the whole batch: add it first (a
	// no-op when it exists), then delete and recreate it.
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(t)
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	for _, dev := range devices {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: dropTCPSyn(dev)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: replace table inet %s (uplinks %v): %w", FirewallTable, devices, err)
	}
	return nil
}

// dropTCPSyn is `iifname DEV meta l4proto tcp tcp flags & (syn|ack) == syn
// counter drop`: a new inbound connection, without needing conntrack.
func dropTCPSyn(dev string) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, dev)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}
