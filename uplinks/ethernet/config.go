// Package ethernet brings up a wired uplink (the fiber ONT's Ethernet
// port, or any link that ends in a DHCP server): it watches carrier over
// netlink, gets an address by DHCPv4 or from static config, optionally on
// an 802.1Q VLAN, and installs the default route in the uplink's own
// routing table.
//
// It exists because the failover spine needs an uplink's state as events,
// not as a poll: carrier loss, lease expiry and a DHCPNAK all mean "this
// path is dead" and are reported the moment the kernel or the server says
// so. The default route never goes into the main table: each uplink has
// its own table so that every WireGuard tunnel leaves through its own link
// whatever the others do. The WiFi uplink reuses this package for its
// addressing once the supplicant has associated.
package ethernet

import (
	"fmt"
	"net/netip"
)

// Config is the addressing of one wired uplink.
//
//	{"dhcp": true, "vlan": 7, "hostname": "lifeline"}
//	{"address": "192.0.2.10/24", "gateway": "192.0.2.1"}
type Config struct {
	// DHCP gets address and gateway from a DHCPv4 server.
	DHCP bool `json:"dhcp,omitempty"`
	// Address is a static address with prefix, e.g. "192.0.2.10/24".
	Address string `json:"address,omitempty"`
	// Gateway is the static default gateway; it must be on-link (inside
	// Address's prefix).
	Gateway string `json:"gateway,omitempty"`
	// VLAN is an 802.1Q id (1..4094) for ISPs that tag traffic on the
	// fiber; the uplink then runs on "<device>.<vlan>". 0 = untagged.
	VLAN int `json:"vlan,omitempty"`
	// Hostname is sent as DHCP option 12 (some ISPs key on it).
	Hostname string `json:"hostname,omitempty"`
}

// Validate checks the config completely and names the field at fault.
func (c *Config) Validate() error {
	if c.VLAN != 0 && (c.VLAN < 1 || c.VLAN > 4094) {
		return fmt.Errorf("vlan: %d out of range 1..4094", c.VLAN)
	}
	if len(c.Hostname) > 63 {
		return fmt.Errorf("hostname: %d characters, at most 63", len(c.Hostname))
	}
	for i, r := range c.Hostname {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("hostname: character %q at %d not allowed (letters, digits, '-', '.')", r, i)
		}
	}
	if c.DHCP {
		if c.Address != "" {
			return fmt.Errorf("address: %q set together with dhcp: true; choose one", c.Address)
		}
		if c.Gateway != "" {
			return fmt.Errorf("gateway: %q set together with dhcp: true; the lease gives the gateway", c.Gateway)
		}
		return nil
	}
	if c.Address == "" {
		return fmt.Errorf("address: required unless dhcp is true")
	}
	p, err := c.prefix()
	if err != nil {
		return err
	}
	if c.Gateway != "" {
		gw, err := c.gateway()
		if err != nil {
			return err
		}
		if gw == p.Addr() {
			return fmt.Errorf("gateway: %v is the uplink's own address", gw)
		}
		if p.Bits() < 31 && !p.Masked().Contains(gw) {
			return fmt.Errorf("gateway: %v is not inside address %v", gw, p)
		}
	}
	return nil
}

func (c *Config) prefix() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(c.Address)
	if err != nil {
		return p, fmt.Errorf("address: %q: want IPv4 address with prefix, e.g. 192.0.2.10/24", c.Address)
	}
	if !p.Addr().Is4() {
		return p, fmt.Errorf("address: %q is not IPv4", c.Address)
	}
	if p.Bits() < 8 {
		return p, fmt.Errorf("address: prefix /%d too short", p.Bits())
	}
	return p, nil
}

func (c *Config) gateway() (netip.Addr, error) {
	gw, err := netip.ParseAddr(c.Gateway)
	if err != nil || !gw.Is4() {
		return gw, fmt.Errorf("gateway: %q is not an IPv4 address", c.Gateway)
	}
	return gw, nil
}

// VLANName is the device name the uplink runs on: parent itself, or
// "<parent>.<vlan>".
func VLANName(parent string, vlan int) string {
	if vlan == 0 {
		return parent
	}
	return fmt.Sprintf("%s.%d", parent, vlan)
}
