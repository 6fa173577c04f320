package supervisor

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/uplinks/mptcp"
	"github.com/lifeline-router/lifeline/uplinks/wg"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Routing layout. Numbers are fixed per uplink index so a restarted
// supervisor finds (and adopts) exactly what it created before.
const (
	uplinkTableBase = 100    // table with the uplink's own default route
	tunnelTableBase = 200    // table with the tunnel's default route
	fwmarkBase      = 0x4c00 // the tunnel's encrypted UDP carries this mark
	markRulePrio    = 1000   // fwmark → uplink table
	srcRulePrio     = 2000   // from tunnel address → tunnel table
	// rtoMinMS on tunnel routes: the kernel's 200 ms floor is far above a
	// 5–40 ms path; measured in the prototype to shorten the stall after
	// a cut (133 vs 140 ms median).
	rtoMinMS = 10
)

// lastResortMetric keeps an uplink table from falling through to the main
// table: without it, a fiber tunnel's UDP would leave through LTE when the
// fiber's route goes away, and the fiber tunnel would look alive.
const lastResortMetric = 0xffffffff

// uplinkPlan is everything one uplink needs, resolved before any change.
type uplinkPlan struct {
	index   int // 1-based, config order
	u       config.Uplink
	link    netlink.Link
	gateway netip.Addr
	tunnel  netip.Prefix
	peer    netip.Addr
	key     wgtypes.Key
	conc    wgtypes.Key
	endp    *net.UDPAddr
	// initCwnd for the tunnel's routes (0: the kernel's default).
	initCwnd int
}

func (p *uplinkPlan) uplinkTable() int { return uplinkTableBase + p.index }
func (p *uplinkPlan) tunnelTable() int { return tunnelTableBase + p.index }
func (p *uplinkPlan) fwmark() int      { return fwmarkBase + p.index }

// Netlink is the kernel boundary the router's configuration goes through.
// It is netlink.Handle in production; tests use the real kernel in a
// namespace rather than a fake.
type Netlink interface {
	LinkByName(string) (netlink.Link, error)
	LinkSetUp(netlink.Link) error
	AddrReplace(netlink.Link, *netlink.Addr) error
	RouteReplace(*netlink.Route) error
	RuleList(int) ([]netlink.Rule, error)
	RuleAdd(*netlink.Rule) error
	RuleDel(*netlink.Rule) error
	RouteGet(net.IP) ([]netlink.Route, error)
}

// plan resolves and checks everything before touching the kernel, so a
// config with a bad field (unknown device, unreadable key) changes nothing.
func plan(cfg *config.Config, nl Netlink) ([]*uplinkPlan, error) {
	if err := cfg.ValidateRouter(); err != nil {
		return nil, err
	}
	conc, err := wgtypes.ParseKey(strings.TrimSpace(cfg.Concentrator.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("concentrator.public_key: %w", err)
	}
	var ps []*uplinkPlan
	for i, u := range cfg.Uplinks {
		field := fmt.Sprintf("uplinks[%d]", i)
		p := &uplinkPlan{index: i + 1, u: u, conc: conc, initCwnd: cfg.Failover.InitCwnd(u)}
		l, err := nl.LinkByName(u.Device)
		if err != nil {
			return nil, fmt.Errorf("%s.device: %q: %w", field, u.Device, err)
		}
		p.link = l
		if u.Gateway != "" {
			p.gateway = netip.MustParseAddr(u.Gateway)
		}
		p.tunnel = netip.MustParsePrefix(u.WireGuard.Address)
		p.peer = netip.MustParseAddr(u.WireGuard.PeerAddress)
		p.key, err = wg.LoadPrivateKey(u.WireGuard.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.wireguard.private_key_file: %w", field, err)
		}
		ep := cfg.EndpointFor(u)
		p.endp, err = net.ResolveUDPAddr("udp", ep)
		if err != nil {
			return nil, fmt.Errorf("%s.wireguard.endpoint: %q: %w", field, ep, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// sysctls the router needs.
//
// Reverse-path filtering is off on the uplinks (see uplinkSysctls) and
// therefore off in "all" (the kernel uses the larger of "all" and the
// device's value); devices created later (LAN side) get loose mode from
// "default".
var routerSysctls = map[string]string{
	"net/mptcp/enabled":                  "1",
	"net/ipv4/ip_forward":                "1",
	"net/ipv4/conf/all/rp_filter":        "0",
	"net/ipv4/conf/default/rp_filter":    "2",
	"net/ipv4/tcp_no_metrics_save":       "1",
	"net/mptcp/add_addr_timeout":         "5",
	"net/ipv4/tcp_slow_start_after_idle": "0",
}

// uplinkSysctls are per uplink device. The concentrator's WireGuard
// replies come from its public address, which is off-link and routed only
// in the uplink's own table, chosen by the tunnel socket's fwmark. The
// reverse-path check of an incoming reply carries no mark, finds no route
// in the main table and drops it, even in loose mode: found in the VM lab
// on our kernel, where the ISP forwards instead of relaying from the
// on-link gateway. Tunnel traffic is authenticated by WireGuard, and the
// uplink firewall drops inbound connection attempts.
func uplinkSysctls(dev string) map[string]string {
	return map[string]string{"net/ipv4/conf/" + dev + "/rp_filter": "0"}
}

func writeSysctls(m map[string]string) error {
	for k, v := range m {
		p := filepath.Join("/proc/sys", k)
		cur, err := os.ReadFile(p)
		// Multi-value sysctls (tcp_wmem) read back tab-separated.
		if err == nil && strings.Join(strings.Fields(string(cur)), " ") == v {
			continue
		}
		if err := os.WriteFile(p, []byte(v), 0644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(k, "/", "."), v, err)
		}
	}
	return nil
}

// applyUplink configures one uplink and its tunnel idempotently.
func applyUplink(log *slog.Logger, nl Netlink, wgm *wg.Manager, p *uplinkPlan) error {
	if err := nl.LinkSetUp(p.link); err != nil {
		return fmt.Errorf("LinkSetUp(%s): %w", p.u.Device, err)
	}
	if p.u.Address != "" {
		pfx := netip.MustParsePrefix(p.u.Address)
		a := &netlink.Addr{IPNet: prefixNet(pfx)}
		if err := nl.AddrReplace(p.link, a); err != nil {
			return fmt.Errorf("AddrReplace(%s, %v): %w", p.u.Device, pfx, err)
		}
	}
	// The uplink's own table: how this uplink's tunnel reaches the
	// concentrator. A managed uplink's DHCP/static/WiFi manager owns this
	// route (it appears with the lease and goes with it).
	if !p.u.Managed() {
		def := &netlink.Route{Dst: defaultNet(), LinkIndex: p.link.Attrs().Index, Table: p.uplinkTable()}
		if p.gateway.IsValid() {
			def.Gw = p.gateway.AsSlice()
		} else {
			def.Scope = netlink.SCOPE_LINK
		}
		if err := nl.RouteReplace(def); err != nil {
			return fmt.Errorf("RouteReplace(%v): %w", def, err)
		}
	}
	unreach := &netlink.Route{Dst: defaultNet(), Table: p.uplinkTable(), Type: unix.RTN_UNREACHABLE, Priority: lastResortMetric}
	if err := nl.RouteReplace(unreach); err != nil {
		return fmt.Errorf("RouteReplace(%v): %w", unreach, err)
	}
	mark := uint32(p.fwmark())
	if err := ensureRule(nl, newRule(markRulePrio+p.index, p.uplinkTable(), mark, nil)); err != nil {
		return err
	}

	cfg := wg.Config{
		Name:       p.u.WireGuard.Interface,
		PrivateKey: p.key,
		FwMark:     int(mark),
		Addresses:  []netip.Prefix{p.tunnel},
		MTU:        p.u.WireGuard.MTU,
		Peers: []wg.Peer{{
			PublicKey:  p.conc,
			Endpoint:   p.endp,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
			Keepalive:  p.u.WireGuard.Keepalive.D(),
		}},
	}
	if err := wgm.Ensure(cfg); err != nil {
		return fmt.Errorf("wireguard %s: %w", cfg.Name, err)
	}
	tl, err := nl.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("LinkByName(%s): %w", cfg.Name, err)
	}
	// The tunnel's own table: subflows bound to this tunnel's address
	// leave through this tunnel, whatever the main table prefers.
	tdef := &netlink.Route{Dst: defaultNet(), LinkIndex: tl.Attrs().Index, Table: p.tunnelTable(), Scope: netlink.SCOPE_LINK, RtoMin: rtoMinMS, RtoMinLock: true, InitCwnd: p.initCwnd}
	if err := nl.RouteReplace(tdef); err != nil {
		return fmt.Errorf("RouteReplace(%v): %w", tdef, err)
	}
	src := &net.IPNet{IP: p.tunnel.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := ensureRule(nl, newRule(srcRulePrio+p.index, p.tunnelTable(), 0, src)); err != nil {
		return err
	}
	log.Debug("uplink applied", "uplink", p.u.Name, "device", p.u.Device, "tunnel", cfg.Name, "mode", wgm.Mode(cfg.Name))
	return nil
}

// ensureRule adds r unless an identical rule is already at its priority,
// and removes anything else we might have left at that priority before:
// rules have no replace operation, so adoption is compare-then-act.
func ensureRule(nl Netlink, r *netlink.Rule) error {
	rules, err := nl.RuleList(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("RuleList: %w", err)
	}
	found := false
	for _, have := range rules {
		if have.Priority != r.Priority {
			continue
		}
		if !found && sameRule(have, *r) {
			found = true
			continue
		}
		h := have
		if err := nl.RuleDel(&h); err != nil {
			return fmt.Errorf("RuleDel(%v): %w", h, err)
		}
	}
	if found {
		return nil
	}
	r.Family = unix.AF_INET
	if err := nl.RuleAdd(r); err != nil {
		return fmt.Errorf("RuleAdd(%v): %w", r, err)
	}
	return nil
}

// newRule starts from netlink.NewRule: its unset fields must be -1, or the
// kernel rejects the rule with EINVAL.
func newRule(prio, table int, mark uint32, src *net.IPNet) *netlink.Rule {
	r := netlink.NewRule()
	r.Priority = prio
	r.Table = table
	r.Mark = mark
	r.Src = src
	r.Family = unix.AF_INET
	return r
}

func sameRule(a, b netlink.Rule) bool {
	if a.Table != b.Table || a.Mark != b.Mark {
		return false
	}
	return a.Src.String() == b.Src.String()
}

func defaultNet() *net.IPNet { return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)} }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// serviceRoute sends new connections to the service address through the
// preferred tunnel, with that tunnel's address as source so the initial
// subflow's address matches an MPTCP endpoint.
func serviceRoute(p *uplinkPlan, svc netip.Addr, tl netlink.Link) *netlink.Route {
	return &netlink.Route{
		Dst:        &net.IPNet{IP: svc.AsSlice(), Mask: net.CIDRMask(32, 32)},
		LinkIndex:  tl.Attrs().Index,
		Src:        p.tunnel.Addr().AsSlice(),
		Scope:      netlink.SCOPE_LINK,
		RtoMin:     rtoMinMS,
		RtoMinLock: true,
		InitCwnd:   p.initCwnd,
	}
}

// endpointFor is the MPTCP endpoint an uplink's tunnel should have.
func endpointFor(p *uplinkPlan, tl netlink.Link, backup bool) mptcp.Endpoint {
	f := mptcp.FlagSubflow
	if backup {
		f |= mptcp.FlagBackup
	}
	return mptcp.Endpoint{Addr: p.tunnel.Addr(), Flags: f, IfIndex: tl.Attrs().Index}
}
