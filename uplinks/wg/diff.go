package wg

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// diffDevice returns the wgctrl change that turns dev into cfg, and whether
// there is any. applied holds the endpoint last applied per peer: a peer
// whose endpoint differs from that one has roamed (WireGuard follows the
// address authenticated packets come from, e.g. a multi-homed concentrator
// answering from another address), and re-applying the same config must not
// pull it back. It works peer by peer instead of sending ReplacePeers: the end
// state is the same, but removing and re-adding a peer drops its session, so
// a peer that did not change must not be touched at all, and one whose
// endpoint or allowed IPs changed is updated in place (which keeps its
// session too).
func diffDevice(dev *wgtypes.Device, cfg *Config, applied map[wgtypes.Key]string) (wgtypes.Config, bool) {
	var wc wgtypes.Config
	changed := false
	if dev.PrivateKey != cfg.PrivateKey {
		k := cfg.PrivateKey
		wc.PrivateKey = &k
		changed = true
	}
	if cfg.ListenPort != 0 && dev.ListenPort != cfg.ListenPort {
		p := cfg.ListenPort
		wc.ListenPort = &p
		changed = true
	}
	if dev.FirewallMark != cfg.FwMark {
		f := cfg.FwMark
		wc.FirewallMark = &f
		changed = true
	}
	have := map[wgtypes.Key]*wgtypes.Peer{}
	for i := range dev.Peers {
		have[dev.Peers[i].PublicKey] = &dev.Peers[i]
	}
	for _, p := range cfg.Peers {
		cur := have[p.PublicKey]
		delete(have, p.PublicKey)
		pc, ok := diffPeer(cur, &p, applied[p.PublicKey])
		if ok {
			wc.Peers = append(wc.Peers, pc)
			changed = true
		}
	}
	// Peers that are no longer wanted, in a stable order for the log.
	var gone []wgtypes.Key
	for k := range have {
		gone = append(gone, k)
	}
	slices.SortFunc(gone, func(a, b wgtypes.Key) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range gone {
		wc.Peers = append(wc.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		changed = true
	}
	return wc, changed
}

// diffPeer returns the change for one wanted peer; cur is nil for a new peer.
func diffPeer(cur *wgtypes.Peer, p *Peer, applied string) (wgtypes.PeerConfig, bool) {
	pc := wgtypes.PeerConfig{PublicKey: p.PublicKey}
	if cur == nil {
		pc.Endpoint = p.Endpoint
		ka := p.Keepalive
		pc.PersistentKeepaliveInterval = &ka
		pc.ReplaceAllowedIPs = true
		pc.AllowedIPs = allowedIPNets(p.AllowedIPs)
		return pc, true
	}
	changed := false
	if p.Endpoint != nil && !sameUDPAddr(cur.Endpoint, p.Endpoint) && applied != p.Endpoint.String() {
		pc.Endpoint = p.Endpoint
		changed = true
	}
	if cur.PersistentKeepaliveInterval != p.Keepalive {
		ka := p.Keepalive
		pc.PersistentKeepaliveInterval = &ka
		changed = true
	}
	if !samePrefixSet(cur.AllowedIPs, p.AllowedIPs) {
		pc.ReplaceAllowedIPs = true
		pc.AllowedIPs = allowedIPNets(p.AllowedIPs)
		changed = true
	}
	if cur.PresharedKey != (wgtypes.Key{}) {
		// Config has no preshared key; clear one set behind our back.
		var zero wgtypes.Key
		pc.PresharedKey = &zero
		changed = true
	}
	return pc, changed
}

func allowedIPNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, *prefixIPNet(p.Masked()))
	}
	return out
}

func samePrefixSet(have []net.IPNet, want []netip.Prefix) bool {
	hs := map[netip.Prefix]bool{}
	for i := range have {
		p, ok := ipNetPrefix(&have[i])
		if !ok {
			return false
		}
		hs[p.Masked()] = true
	}
	ws := map[netip.Prefix]bool{}
	for _, p := range want {
		ws[netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()] = true
	}
	if len(hs) != len(ws) {
		return false
	}
	for p := range ws {
		if !hs[p] {
			return false
		}
	}
	return true
}

func sameUDPAddr(a, b *net.UDPAddr) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Port == b.Port && a.IP.Equal(b.IP) && a.Zone == b.Zone
}

// describe summarises a change for the log without printing the private key.
func describe(wc wgtypes.Config) string {
	var parts []string
	if wc.PrivateKey != nil {
		parts = append(parts, "private key")
	}
	if wc.ListenPort != nil {
		parts = append(parts, fmt.Sprintf("listen port %d", *wc.ListenPort))
	}
	if wc.FirewallMark != nil {
		parts = append(parts, fmt.Sprintf("fwmark %#x", *wc.FirewallMark))
	}
	for _, p := range wc.Peers {
		switch {
		case p.Remove:
			parts = append(parts, "remove peer "+p.PublicKey.String())
		default:
			parts = append(parts, "set peer "+p.PublicKey.String())
		}
	}
	return strings.Join(parts, ", ")
}
