// Package dhcp4 is the DHCPv4 client of an uplink: it obtains a lease,
// renews it at T1, rebinds at T2, persists it across restarts and says at
// once when it is lost.
//
// It exists apart from the link code because the lease's life is pure
// protocol and time: the state machine runs against a Transport, so it is
// tested with a scripted server as well as with real ones (dnsmasq, the
// insomniacslk server4) in network namespaces. Losing a lease is an uplink
// failure for the failover logic, so expiry and NAK are reported the moment
// they happen, never on the next poll.
package dhcp4

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Infinite is the lease time (seconds) RFC 2131 uses for "forever".
const Infinite = 0xffffffff

// Lease is one bound address as the server granted it. It is stored as
// JSON; the raw OFFER and ACK are kept so that a restarted client can renew
// with exactly what the server sent.
type Lease struct {
	Address netip.Prefix `json:"address"` // 192.0.2.10/24
	Router  netip.Addr   `json:"router,omitzero"`
	DNS     []netip.Addr `json:"dns,omitempty"`
	Server  netip.Addr   `json:"server"`
	// Obtained is when the ACK arrived; all lease times count from here.
	Obtained      time.Time `json:"obtained"`
	LeaseSeconds  uint32    `json:"lease_seconds"`
	RenewSeconds  uint32    `json:"renew_seconds"`  // T1
	RebindSeconds uint32    `json:"rebind_seconds"` // T2

	Offer []byte `json:"offer,omitempty"`
	ACK   []byte `json:"ack"`
}

// Infinite reports whether the lease never expires.
func (l *Lease) Infinite() bool { return l.LeaseSeconds == Infinite }

func (l *Lease) at(s uint32) time.Time {
	if s == Infinite {
		return time.Time{}
	}
	return l.Obtained.Add(time.Duration(s) * time.Second)
}

// RenewAt is T1; zero for an infinite lease.
func (l *Lease) RenewAt() time.Time { return l.at(l.RenewSeconds) }

// RebindAt is T2; zero for an infinite lease.
func (l *Lease) RebindAt() time.Time { return l.at(l.RebindSeconds) }

// Expiry is when the address must no longer be used; zero for an infinite
// lease.
func (l *Lease) Expiry() time.Time { return l.at(l.LeaseSeconds) }

// Remaining is the valid time left at now (for the address's valid_lft);
// negative once expired. An infinite lease has a very long remainder.
func (l *Lease) Remaining(now time.Time) time.Duration {
	if l.Infinite() {
		return time.Duration(1<<63 - 1)
	}
	return l.Expiry().Sub(now)
}

// Expired reports whether the lease is over at now.
func (l *Lease) Expired(now time.Time) bool { return !l.Infinite() && !now.Before(l.Expiry()) }

func (l *Lease) String() string {
	return fmt.Sprintf("%v via %v from %v, expires %v", l.Address, l.Router, l.Server, l.Expiry().Format(time.RFC3339))
}

// packets decodes the stored OFFER and ACK (the OFFER falls back to the ACK:
// nclient4 only reads the server identifier from it).
func (l *Lease) packets() (offer, ack *dhcpv4.DHCPv4, err error) {
	ack, err = dhcpv4.FromBytes(l.ACK)
	if err != nil {
		return nil, nil, fmt.Errorf("lease ACK: %w", err)
	}
	offer = ack
	if len(l.Offer) > 0 {
		if offer, err = dhcpv4.FromBytes(l.Offer); err != nil {
			return nil, nil, fmt.Errorf("lease OFFER: %w", err)
		}
	}
	return offer, ack, nil
}

// FromACK builds a Lease from a server's ACK (offer may be nil). Lease
// times are sanitised the way RFC 2131 4.4.5 asks: T1 defaults to half the
// lease, T2 to 7/8, and T1 ≤ T2 ≤ lease always holds.
func FromACK(offer, ack *dhcpv4.DHCPv4, now time.Time) (*Lease, error) {
	if ack == nil {
		return nil, errors.New("no ACK")
	}
	if t := ack.MessageType(); t != dhcpv4.MessageTypeAck {
		return nil, fmt.Errorf("message type %v, want ACK", t)
	}
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return nil, fmt.Errorf("ACK yiaddr %v is not a usable IPv4 address", ack.YourIPAddr)
	}
	bits := 32
	if m := ack.SubnetMask(); m != nil {
		ones, size := net.IPMask(m).Size()
		if size != 32 || ones == 0 {
			return nil, fmt.Errorf("ACK subnet mask %v is not a valid IPv4 netmask", net.IP(m))
		}
		bits = ones
	}
	l := &Lease{Address: netip.PrefixFrom(ip, bits), Obtained: now, ACK: ack.ToBytes()}
	if offer != nil {
		l.Offer = offer.ToBytes()
	}
	for _, r := range ack.Router() {
		if a, ok := netip.AddrFromSlice(r.To4()); ok && !a.IsUnspecified() {
			l.Router = a
			break
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	if s, ok := netip.AddrFromSlice(ack.ServerIdentifier().To4()); ok {
		l.Server = s
	}
	lease := ack.IPAddressLeaseTime(0)
	if lease <= 0 {
		return nil, errors.New("ACK carries no lease time (option 51)")
	}
	if lease >= Infinite*time.Second {
		l.LeaseSeconds, l.RenewSeconds, l.RebindSeconds = Infinite, Infinite, Infinite
		return l, nil
	}
	l.LeaseSeconds = uint32(lease / time.Second)
	t1 := uint32(ack.IPAddressRenewalTime(0) / time.Second)
	t2 := uint32(ack.IPAddressRebindingTime(0) / time.Second)
	if t2 == 0 || t2 > l.LeaseSeconds {
		t2 = uint32(uint64(l.LeaseSeconds) * 7 / 8)
	}
	if t1 == 0 || t1 > t2 {
		t1 = l.LeaseSeconds / 2
		if t1 > t2 {
			t1 = t2
		}
	}
	l.RenewSeconds, l.RebindSeconds = t1, t2
	return l, nil
}

// Store keeps one lease in a JSON file under the state directory, written
// atomically so that a power cut leaves either the old or the new lease.
type Store struct {
	Path string
}

// Load returns the stored lease, or (nil, nil) when there is none.
func (s *Store) Load() (*Lease, error) {
	if s == nil || s.Path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var l Lease
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path, err)
	}
	if !l.Address.IsValid() || len(l.ACK) == 0 {
		return nil, fmt.Errorf("%s: lease without address or ACK", s.Path)
	}
	return &l, nil
}

// Save writes l atomically.
func (s *Store) Save(l *Lease) error {
	if s == nil || s.Path == "" {
		return nil
	}
	b, err := json.MarshalIndent(l, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return err
	}
	tmp := s.Path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.Path); err != nil {
		return fmt.Errorf("rename(%s): %w", tmp, err)
	}
	return nil
}

// Remove forgets the stored lease.
func (s *Store) Remove() error {
	if s == nil || s.Path == "" {
		return nil
	}
	if err := os.Remove(s.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
