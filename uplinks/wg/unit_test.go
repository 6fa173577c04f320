package wg

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestValidate(t *testing.T) {
	priv := mustKey(t)
	peer := mustKey(t).PublicKey()
	good := func() Config {
		return Config{
			Name: "wg-fiber0", PrivateKey: priv, ListenPort: 51820, FwMark: 0x100, MTU: 1420,
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")},
			Peers: []Peer{{PublicKey: peer, Endpoint: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 51820},
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Keepalive: 25 * time.Second}},
		}
	}
	c := good()
	if err := c.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"Config.Name", func(c *Config) { c.Name = "" }},
		{"Config.Name", func(c *Config) { c.Name = "a-name-of-16-bytes" }},
		{"Config.Name", func(c *Config) { c.Name = "../etc" }},
		{"Config.PrivateKey", func(c *Config) { c.PrivateKey = wgtypes.Key{} }},
		{"Config.ListenPort", func(c *Config) { c.ListenPort = 70000 }},
		{"Config.ListenPort", func(c *Config) { c.ListenPort = -1 }},
		{"Config.FwMark", func(c *Config) { c.FwMark = -1 }},
		{"Config.MTU", func(c *Config) { c.MTU = 500 }},
		{"Config.Addresses[1]", func(c *Config) { c.Addresses = append(c.Addresses, netip.Prefix{}) }},
		{"Config.Addresses[1]", func(c *Config) { c.Addresses = append(c.Addresses, c.Addresses[0]) }},
		{"Config.Peers[0].PublicKey", func(c *Config) { c.Peers[0].PublicKey = wgtypes.Key{} }},
		{"Config.Peers[0].PublicKey", func(c *Config) { c.Peers[0].PublicKey = priv.PublicKey() }},
		{"Config.Peers[1].PublicKey", func(c *Config) { c.Peers = append(c.Peers, Peer{PublicKey: peer}) }},
		{"Config.Peers[0].Endpoint", func(c *Config) { c.Peers[0].Endpoint = &net.UDPAddr{IP: net.IPv4zero, Port: 1} }},
		{"Config.Peers[0].Endpoint", func(c *Config) { c.Peers[0].Endpoint.Port = 0 }},
		{"Config.Peers[0].AllowedIPs[1]", func(c *Config) { c.Peers[0].AllowedIPs = append(c.Peers[0].AllowedIPs, netip.Prefix{}) }},
		{"Config.Peers[0].Keepalive", func(c *Config) { c.Peers[0].Keepalive = 1500 * time.Millisecond }},
		{"Config.Peers[0].Keepalive", func(c *Config) { c.Peers[0].Keepalive = 70000 * time.Second }},
	} {
		c := good()
		c.Peers[0].Endpoint = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 51820}
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate() = %v, want an error naming %s", tc.field, err, tc.field)
		}
	}
}

func TestEnsureRejectsBadConfigBeforeTouchingAnything(t *testing.T) {
	m := NewManager(nil, ModeUserspace)
	defer m.Close()
	err := m.Ensure(Config{Name: "lw-bad", MTU: 1420})
	if err == nil || !strings.Contains(err.Error(), "Config.PrivateKey") {
		t.Errorf("Ensure with zero key = %v, want an error naming Config.PrivateKey", err)
	}
	if got := m.Mode("lw-bad"); got != "" {
		t.Errorf("Mode after a rejected config = %q", got)
	}
}

func TestDiffDevice(t *testing.T) {
	priv := mustKey(t)
	p1, p2, p3 := mustKey(t).PublicKey(), mustKey(t).PublicKey(), mustKey(t).PublicKey()
	ep := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 51820}
	cfg := &Config{
		Name: "wg0", PrivateKey: priv, ListenPort: 51820, FwMark: 0x10,
		Peers: []Peer{
			{PublicKey: p1, Endpoint: ep, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::/64")}, Keepalive: 25 * time.Second},
			{PublicKey: p2, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}},
		},
	}
	ipnet := func(s string) net.IPNet { return *prefixIPNet(netip.MustParsePrefix(s)) }
	// What the kernel reports for cfg, with p2 having roamed to an endpoint
	// of its own and the allowed IPs in another order.
	same := func() *wgtypes.Device {
		return &wgtypes.Device{
			PrivateKey: priv, ListenPort: 51820, FirewallMark: 0x10,
			Peers: []wgtypes.Peer{
				{PublicKey: p2, Endpoint: &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 4444}, AllowedIPs: []net.IPNet{ipnet("10.0.1.0/24")},
					LastHandshakeTime: time.Now()},
				{PublicKey: p1, Endpoint: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1).To16(), Port: 51820}, PersistentKeepaliveInterval: 25 * time.Second,
					AllowedIPs: []net.IPNet{ipnet("fd00::/64"), ipnet("10.0.0.2/32")}},
			},
		}
	}
	if wc, changed := diffDevice(same(), cfg, nil); changed {
		t.Errorf("diff of an equal device: %s", describe(wc))
	}
	// ListenPort 0 accepts whatever port the device has.
	c0 := *cfg
	c0.ListenPort = 0
	if wc, changed := diffDevice(same(), &c0, nil); changed {
		t.Errorf("diff with ListenPort 0: %s", describe(wc))
	}

	d := same()
	d.FirewallMark = 0
	d.Peers[1].PersistentKeepaliveInterval = 0
	d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: p3})
	wc, changed := diffDevice(d, cfg, nil)
	if !changed || wc.FirewallMark == nil || *wc.FirewallMark != 0x10 || wc.PrivateKey != nil || wc.ListenPort != nil || wc.ReplacePeers {
		t.Fatalf("diff = %+v, want only the fwmark and peers", wc)
	}
	if len(wc.Peers) != 2 {
		t.Fatalf("peer changes %s, want p1's keepalive and p3's removal", describe(wc))
	}
	if pc := wc.Peers[0]; pc.PublicKey != p1 || pc.Remove || pc.ReplaceAllowedIPs || pc.Endpoint != nil ||
		pc.PersistentKeepaliveInterval == nil || *pc.PersistentKeepaliveInterval != 25*time.Second {
		t.Errorf("p1 change = %+v, want only the keepalive", pc)
	}
	if pc := wc.Peers[1]; pc.PublicKey != p3 || !pc.Remove {
		t.Errorf("p3 change = %+v, want removal", pc)
	}

	d = same()
	d.Peers[1].AllowedIPs = d.Peers[1].AllowedIPs[:1]
	d.Peers[1].Endpoint = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 51820}
	d.Peers[0].PresharedKey = mustKey(t)
	wc, _ = diffDevice(d, cfg, nil)
	if len(wc.Peers) != 2 {
		t.Fatalf("peer changes: %s", describe(wc))
	}
	if pc := wc.Peers[0]; pc.PublicKey != p1 || !pc.ReplaceAllowedIPs || len(pc.AllowedIPs) != 2 || !sameUDPAddr(pc.Endpoint, ep) {
		t.Errorf("p1 change = %+v, want allowed IPs replaced and endpoint reset", pc)
	}
	if pc := wc.Peers[1]; pc.PublicKey != p2 || pc.PresharedKey == nil || *pc.PresharedKey != (wgtypes.Key{}) {
		t.Errorf("p2 change = %+v, want the stray preshared key cleared", pc)
	}

	// p1 roamed away from the endpoint applied last time: left alone. A
	// config that names a new endpoint is applied.
	d = same()
	d.Peers[1].Endpoint = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 77), Port: 51820}
	applied := map[wgtypes.Key]string{p1: ep.String()}
	if wc, changed := diffDevice(d, cfg, applied); changed {
		t.Errorf("diff of a roamed peer: %s", describe(wc))
	}
	applied[p1] = "192.0.2.200:51820"
	if wc, _ := diffDevice(d, cfg, applied); len(wc.Peers) != 1 || !sameUDPAddr(wc.Peers[0].Endpoint, ep) {
		t.Errorf("diff after the configured endpoint changed: %+v", wc.Peers)
	}

	d = same()
	d.PrivateKey = mustKey(t)
	d.ListenPort = 1234
	d.Peers = d.Peers[:1]
	wc, _ = diffDevice(d, cfg, nil)
	if wc.PrivateKey == nil || *wc.PrivateKey != priv || wc.ListenPort == nil || *wc.ListenPort != 51820 {
		t.Errorf("diff = %+v, want private key and port", wc)
	}
	if len(wc.Peers) != 1 || wc.Peers[0].PublicKey != p1 || wc.Peers[0].PersistentKeepaliveInterval == nil || len(wc.Peers[0].AllowedIPs) != 2 {
		t.Errorf("new peer p1: %+v", wc.Peers)
	}
	if s := describe(wc); strings.Contains(s, priv.String()) {
		t.Errorf("describe leaks the private key: %s", s)
	}
}

func TestLoadPrivateKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	priv, pub, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if pub != priv.PublicKey() || priv == (wgtypes.Key{}) {
		t.Fatalf("GenerateKeyPair: pub %s does not match priv", pub)
	}
	if priv2, _, _ := GenerateKeyPair(); priv2 == priv {
		t.Fatal("GenerateKeyPair returned the same key twice")
	}
	for _, mode := range []os.FileMode{0o600, 0o644} { // the second only warns
		p := write("key"+mode.String(), priv.String()+"\n", mode)
		k, err := LoadPrivateKey(p)
		if err != nil || k != priv {
			t.Errorf("LoadPrivateKey(%s, mode %v) = %v, %v; want the key", p, mode, k, err)
		}
	}
	for name, content := range map[string]string{
		"empty":    "\n",
		"garbage":  "not a key at all",
		"short":    priv.String()[:40],
		"zero":     wgtypes.Key{}.String(),
		"two keys": priv.String() + "\n" + priv.String(),
	} {
		p := write(strings.ReplaceAll(name, " ", "_"), content, 0o600)
		_, err := LoadPrivateKey(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: LoadPrivateKey = %v, want an error naming %s", name, err, p)
		}
		if err != nil && name == "short" && strings.Contains(err.Error(), content) {
			t.Errorf("error echoes key material: %v", err)
		}
	}
	missing := filepath.Join(dir, "missing")
	if _, err := LoadPrivateKey(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v, want an error naming %s", err, missing)
	}
	if _, err := LoadPrivateKey(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("directory: %v, want an error naming %s", err, dir)
	}
}

func TestPrefixConversion(t *testing.T) {
	for _, s := range []string{"10.0.0.1/24", "0.0.0.0/0", "fd00::1/64", "::/0", "192.0.2.1/32"} {
		p := netip.MustParsePrefix(s)
		back, ok := ipNetPrefix(prefixIPNet(p))
		if !ok || back != p {
			t.Errorf("%s -> %v -> %v %v", s, prefixIPNet(p), back, ok)
		}
	}
	// The kernel may hand IPv4 back in 16-byte form.
	n := &net.IPNet{IP: net.IPv4(10, 0, 0, 1), Mask: net.CIDRMask(120, 128)}
	if p, ok := ipNetPrefix(n); !ok || p != netip.MustParsePrefix("10.0.0.1/24") {
		t.Errorf("16-byte IPv4 %v -> %v %v", n, p, ok)
	}
}
