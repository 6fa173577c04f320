package dhcp4

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// ErrNAK is wrapped by Transport errors when the server said DHCPNAK: the
// address is no longer ours.
var ErrNAK = errors.New("DHCPNAK")

// Transport is the wire side of the client, one method per RFC 2131 state
// that sends something. Every method honours ctx's deadline, which the
// state machine sets to the next lease boundary (T2, expiry).
type Transport interface {
	// Discover runs DISCOVER/OFFER/REQUEST/ACK (INIT).
	Discover(ctx context.Context) (*Lease, error)
	// Reboot asks to keep l's address after a restart (INIT-REBOOT:
	// broadcast REQUEST with the requested-IP option, no server id).
	Reboot(ctx context.Context, l *Lease) (*Lease, error)
	// Renew asks l's server to extend it (RENEWING).
	Renew(ctx context.Context, l *Lease) (*Lease, error)
	// Rebind asks any server to extend it (REBINDING).
	Rebind(ctx context.Context, l *Lease) (*Lease, error)
	Close() error
}

// TransportOptions tune the nclient4 transport.
type TransportOptions struct {
	Hostname string        // option 12, "" = none
	Timeout  time.Duration // first retransmission timeout (default 2s, doubling)
	Retries  int           // sends per attempt (default 3)
}

// NewTransport opens a raw socket on ifname (the interface may have no
// address yet). The socket belongs to the network namespace of the calling
// thread.
func NewTransport(ifname string, o TransportOptions) (Transport, error) {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 3
	}
	c, err := nclient4.New(ifname, nclient4.WithTimeout(o.Timeout), nclient4.WithRetry(o.Retries))
	if err != nil {
		return nil, fmt.Errorf("nclient4.New(%s): %w", ifname, err)
	}
	return &ncTransport{c: c, o: o}, nil
}

type ncTransport struct {
	c *nclient4.Client
	o TransportOptions
}

var requested = []dhcpv4.OptionCode{
	dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionDomainName, dhcpv4.OptionInterfaceMTU,
	dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
}

func (t *ncTransport) mods() []dhcpv4.Modifier {
	m := []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(requested...)}
	if t.o.Hostname != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptHostName(t.o.Hostname)))
	}
	return m
}

func nakErr(call string, err error) error {
	var nak *nclient4.ErrNak
	if errors.As(err, &nak) {
		return fmt.Errorf("%s: %w (%s)", call, ErrNAK, nak.Nak.Message())
	}
	return fmt.Errorf("%s: %w", call, err)
}

func (t *ncTransport) Discover(ctx context.Context) (*Lease, error) {
	nl, err := t.c.Request(ctx, t.mods()...)
	if err != nil {
		return nil, nakErr("DHCP discover", err)
	}
	return FromACK(nl.Offer, nl.ACK, time.Now())
}

func (t *ncTransport) exchange(ctx context.Context, call string, req *dhcpv4.DHCPv4, server net.IP) (*Lease, error) {
	match := nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	if server != nil {
		match = nclient4.IsAll(nclient4.IsCorrectServer(server), match)
	}
	resp, err := t.c.SendAndRead(ctx, t.c.RemoteAddr(), req, match)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", call, err)
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return nil, fmt.Errorf("%s: %w (%s)", call, ErrNAK, resp.Message())
	}
	return FromACK(resp, resp, time.Now())
}

func (t *ncTransport) Reboot(ctx context.Context, l *Lease) (*Lease, error) {
	req, err := dhcpv4.New(append(t.mods(),
		dhcpv4.WithHwAddr(t.c.InterfaceAddr()),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(l.Address.Addr().AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
		dhcpv4.WithBroadcast(true))...)
	if err != nil {
		return nil, fmt.Errorf("DHCP reboot request: %w", err)
	}
	return t.exchange(ctx, "DHCP reboot "+l.Address.Addr().String(), req, nil)
}

// renewRequest differs from nclient4's own: a fresh transaction id (the
// stored ACK's xid may still be pending after a restart) and our options.
func (t *ncTransport) renewRequest(l *Lease) (*dhcpv4.DHCPv4, *dhcpv4.DHCPv4, error) {
	offer, ack, err := l.packets()
	if err != nil {
		return nil, nil, err
	}
	xid, err := dhcpv4.GenerateTransactionID()
	if err != nil {
		return nil, nil, err
	}
	req, err := dhcpv4.NewRenewFromAck(ack, append(t.mods(),
		dhcpv4.WithTransactionID(xid),
		dhcpv4.WithHwAddr(t.c.InterfaceAddr()),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))...)
	return offer, req, err
}

func (t *ncTransport) Renew(ctx context.Context, l *Lease) (*Lease, error) {
	offer, req, err := t.renewRequest(l)
	if err != nil {
		return nil, fmt.Errorf("DHCP renew request: %w", err)
	}
	// Sent to the broadcast address on the raw socket (nclient4 has no
	// unicast path without an extra bound socket); RFC 2131 servers accept
	// it, and the server-id match keeps us with the lease's own server.
	nl, err := t.exchange(ctx, "DHCP renew "+l.Address.Addr().String(), req, offer.ServerIdentifier())
	if nl != nil {
		nl.Offer = l.Offer
	}
	return nl, err
}

func (t *ncTransport) Rebind(ctx context.Context, l *Lease) (*Lease, error) {
	_, req, err := t.renewRequest(l)
	if err != nil {
		return nil, fmt.Errorf("DHCP rebind request: %w", err)
	}
	return t.exchange(ctx, "DHCP rebind "+l.Address.Addr().String(), req, nil)
}

func (t *ncTransport) Close() error { return t.c.Close() }
