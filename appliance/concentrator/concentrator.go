// Package concentrator is the server end a user runs on a VPS: one
// WireGuard listener per uplink path (its own UDP port, so firewalls and the
// router's policy routing can tell paths apart), the service address that
// every MPTCP subflow reaches, an echo responder for the router's in-tunnel
// probes, and a firewall that accepts only the tunnels' ports.
//
// It reads the same config file as the router, so both ends of a tunnel are
// described once.
package concentrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/uplinks/mptcp"
	"github.com/lifeline-router/lifeline/uplinks/probe"
	"github.com/lifeline-router/lifeline/uplinks/wg"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ServiceLink holds the service address; a dummy device rather than lo, so
// removing it removes exactly what we added.
const ServiceLink = "lifeline0"

// Options for Run.
type Options struct {
	Config *config.Config
	Log    *slog.Logger
	WGMode wg.Mode
	// NFT is the nft binary ("" = search PATH; "-" = don't touch the firewall).
	NFT   string
	Ready func()
}

type path struct {
	name     string
	cfg      wg.Config
	prefix   netip.Prefix
	initCwnd int
}

func plan(cfg *config.Config) (wgtypes.Key, []path, error) {
	if err := cfg.ValidateConcentrator(); err != nil {
		return wgtypes.Key{}, nil, err
	}
	key, err := wg.LoadPrivateKey(cfg.Concentrator.PrivateKeyFile)
	if err != nil {
		return wgtypes.Key{}, nil, fmt.Errorf("concentrator.private_key_file: %w", err)
	}
	var ps []path
	for i, u := range cfg.Uplinks {
		w := u.WireGuard
		pub, err := wgtypes.ParseKey(strings.TrimSpace(w.PublicKey))
		if err != nil {
			return key, nil, fmt.Errorf("uplinks[%d].wireguard.public_key: %w", i, err)
		}
		tun := netip.MustParsePrefix(w.Address)
		peer := netip.MustParseAddr(w.PeerAddress)
		ps = append(ps, path{
			name:     u.Name,
			prefix:   tun.Masked(),
			initCwnd: cfg.Failover.InitCwnd(u),
			cfg: wg.Config{
				Name:       w.ConcentratorInterface,
				PrivateKey: key,
				ListenPort: w.Port,
				Addresses:  []netip.Prefix{netip.PrefixFrom(peer, tun.Bits())},
				MTU:        w.MTU,
				Peers: []wg.Peer{{
					PublicKey:  pub,
					AllowedIPs: []netip.Prefix{netip.PrefixFrom(tun.Addr(), 32)},
				}},
			},
		})
	}
	return key, ps, nil
}

var sysctls = map[string]string{
	"net/mptcp/enabled":   "1",
	"net/ipv4/ip_forward": "1",
}

// Run applies the concentrator's state and serves probes until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	cfg := o.Config
	_, paths, err := plan(cfg)
	if err != nil {
		return err
	}
	// The send-buffer cap applies to downloads the way it does to the
	// router's uploads (the concentrator's LTE subflow must not queue more
	// than the fiber can wait for at fail-back), and uploads land here, on
	// the router's primary subflow that joins again at every fail-back.
	want := maps.Clone(sysctls)
	maps.Copy(want, cfg.BufferSysctls())
	for k, v := range want {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	if err := ensureServiceAddress(netip.MustParseAddr(cfg.Concentrator.ServiceAddress)); err != nil {
		return err
	}
	m := wg.NewManager(o.Log, o.WGMode)
	defer m.Close()
	for _, p := range paths {
		if err := m.Ensure(p.cfg); err != nil {
			return fmt.Errorf("path %s: wireguard %s: %w", p.name, p.cfg.Name, err)
		}
		// rto_min on the route back to the router's tunnel address: the
		// kernel's 200 ms floor dwarfs a 5–40 ms path. A backup path gets
		// the larger initial window, for downloads failing over to it.
		l, err := netlink.LinkByName(p.cfg.Name)
		if err != nil {
			return fmt.Errorf("LinkByName(%s): %w", p.cfg.Name, err)
		}
		r := &netlink.Route{
			Dst:        &net.IPNet{IP: p.prefix.Addr().AsSlice(), Mask: net.CIDRMask(p.prefix.Bits(), 32)},
			LinkIndex:  l.Attrs().Index,
			Scope:      netlink.SCOPE_LINK,
			Src:        p.cfg.Addresses[0].Addr().AsSlice(),
			Protocol:   2, // kernel: replace the connected route in place
			RtoMin:     10,
			RtoMinLock: true,
			InitCwnd:   p.initCwnd,
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("RouteReplace(%v): %w", r, err)
		}
	}
	if o.NFT != "-" {
		rs := Ruleset(cfg)
		if err := applyNFT(o.NFT, rs); err != nil {
			return err
		}
	}
	pm, err := mptcp.Dial()
	if err != nil {
		return fmt.Errorf("mptcp.Dial: %w", err)
	}
	defer pm.Close()
	svc := netip.MustParseAddr(cfg.Concentrator.ServiceAddress)
	// A flagless endpoint on the service address: it announces nothing and
	// opens no subflow, but lets a nudge toggle its backup flag, which is
	// the one way to make the kernel send an ACK (MP_PRIO, carrying the
	// current DATA_ACK) on every subflow right now.
	if _, err := pm.EnsureEndpoint(mptcp.Endpoint{Addr: svc}); err != nil {
		return fmt.Errorf("mptcp EnsureEndpoint(%v): %w", svc, err)
	}
	// The kernel accepts 2 joined subflows per connection unless told more. At a fail-back
	// the router joins the primary again and re-joins the backup (the flush), and the
	// backup's old subflow may not be closed here yet: with 2, that join was rejected
	// (MPJoinRejected in 1 of 60 host-bench trials, a 1.02 s fail-back), and the connection
	// lost its backup subflow for the next fault.
	lim := mptcp.Limits{Subflows: cfg.MPTCP.Subflows, AddAddrAccepted: cfg.MPTCP.AddAddrAccepted}
	if err := pm.EnsureLimits(lim); err != nil {
		return fmt.Errorf("mptcp EnsureLimits(%+v): %w", lim, err)
	}
	resp, err := probe.NewResponder(fmt.Sprintf(":%d", cfg.Concentrator.ProbePort))
	if err != nil {
		return err
	}
	resp.OnNudge = func(dead netip.Addr) error {
		err := Nudge(pm, svc, dead)
		if err != nil {
			o.Log.Warn("nudge", "dead", dead, "err", err)
		}
		return err
	}
	o.Log.Info("lifeline: ready (concentrator)", "paths", len(paths))
	if o.Ready != nil {
		o.Ready()
	}
	return resp.Serve(ctx)
}

// Nudge answers a router that reports the path of its tunnel address dead:
// it aborts that path's subflows here (their ACKs could not reach the
// router anyway), then sets and clears the backup flag of the service
// address's endpoint. Each change sends MP_PRIO, on an ACK that also
// carries the connection's current DATA_ACK, on the first active subflow
// from that address (the kernel sends it on one subflow only, which is why
// the dead ones must go first); clearing the flag at once leaves every
// subflow's priority as it was.
func Nudge(pm *mptcp.Client, svc, dead netip.Addr) error {
	if _, err := pm.DestroySubflows(dead); err != nil {
		return err
	}
	if err := pm.SetFlags(mptcp.Endpoint{Addr: svc, Flags: mptcp.FlagBackup}); err != nil {
		return err
	}
	return pm.SetFlags(mptcp.Endpoint{Addr: svc})
}

func ensureServiceAddress(a netip.Addr) error {
	l, err := netlink.LinkByName(ServiceLink)
	if err != nil {
		err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: ServiceLink}})
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			// No dummy driver (this host's kernel): loopback carries the
			// address just as well, it is only harder to clean up.
			if l, err = netlink.LinkByName("lo"); err != nil {
				return fmt.Errorf("LinkByName(lo): %w", err)
			}
		case err != nil:
			return fmt.Errorf("LinkAdd(dummy %s): %w", ServiceLink, err)
		default:
			if l, err = netlink.LinkByName(ServiceLink); err != nil {
				return fmt.Errorf("LinkByName(%s): %w", ServiceLink, err)
			}
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("AddrReplace(%s, %v): %w", l.Attrs().Name, addr, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("LinkSetUp(%s): %w", l.Attrs().Name, err)
	}
	return nil
}

// Ruleset is the concentrator's nftables table. It is replaced as a whole
// in one transaction (the `table` is declared, flushed and refilled in one
// `nft -f` run), which is atomic and idempotent; we use the nft tool rather
// than a netlink library because the ruleset text is what an operator reads
// and diffs, and it is applied once at start, never on a hot path.
func Ruleset(cfg *config.Config) string {
	var ports, nets []string
	for _, u := range cfg.Uplinks {
		ports = append(ports, fmt.Sprint(u.WireGuard.Port))
		nets = append(nets, netip.MustParsePrefix(u.WireGuard.Address).Masked().String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet lifeline\nflush table inet lifeline\ntable inet lifeline {\n")
	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	if e := cfg.Concentrator.Egress; e != "" {
		// Only the public side is filtered: tunnel traffic and local
		// management are not this table's business.
		fmt.Fprintf(&b, "\t\tiifname %q ct state established,related accept\n", e)
		fmt.Fprintf(&b, "\t\tiifname %q udp dport { %s } accept\n", e, strings.Join(ports, ", "))
		fmt.Fprintf(&b, "\t\tiifname %q icmp type { echo-request, destination-unreachable, time-exceeded } accept\n", e)
		fmt.Fprintf(&b, "\t\tiifname %q tcp dport 22 accept\n", e)
		fmt.Fprintf(&b, "\t\tiifname %q drop\n", e)
	}
	fmt.Fprintf(&b, "\t}\n")
	if e := cfg.Concentrator.Egress; e != "" {
		fmt.Fprintf(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
		fmt.Fprintf(&b, "\t\toifname %q ip saddr { %s } masquerade\n\t}\n", e, strings.Join(nets, ", "))
	}
	fmt.Fprintf(&b, "}\n")
	return b.String()
}

func applyNFT(bin, rs string) error {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("nft"); err != nil {
			return fmt.Errorf("nft not found (install nftables, or pass --nft=- to leave the firewall alone): %w", err)
		}
	}
	cmd := exec.Command(bin, "-f", "-")
	cmd.Stdin = strings.NewReader(rs)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f (ruleset):\n%s\n%s: %w", rs, out, err)
	}
	return nil
}
