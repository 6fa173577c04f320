package mptcp

import (
	"net/netip"
	"testing"
)

// The failover reactor's budget is a few milliseconds from detection to
// the endpoint being gone; these measure the netlink side of it.

func benchClient(b *testing.B) *Client {
	requireNetNS(b)
	return dialIn(b, newNetNS(b))
}

// BenchmarkDelEndpoint times DEL_ADDR alone (the kernel waits for an RCU
// grace period before it acks).
func BenchmarkDelEndpoint(b *testing.B) {
	c := benchClient(b)
	e := Endpoint{ID: 10, Addr: netip.MustParseAddr("10.0.0.1"), Flags: FlagSubflow}
	for b.Loop() {
		b.StopTimer()
		if err := c.AddEndpoint(e); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := c.DelEndpoint(e.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSetFlagsBackup(b *testing.B) {
	c := benchClient(b)
	e := Endpoint{ID: 10, Addr: netip.MustParseAddr("10.0.0.1"), Flags: FlagSubflow}
	if err := c.AddEndpoint(e); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		e.Flags ^= FlagBackup
		if err := c.SetFlags(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEndpoints(b *testing.B) {
	c := benchClient(b)
	for i := 1; i <= 8; i++ {
		if err := c.AddEndpoint(Endpoint{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), Flags: FlagSubflow}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := c.Endpoints(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSubflowsIdle(b *testing.B) {
	c := benchClient(b)
	for b.Loop() {
		if _, err := c.Subflows(); err != nil {
			b.Fatal(err)
		}
	}
}
