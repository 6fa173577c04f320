package mptcp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
)

func addVeth(t *testing.T, ns, a, b string) {
	t.Helper()
	ip(t, ns, "link", "add", a, "type", "veth", "peer", "name", b)
	ip(t, ns, "link", "set", a, "up")
	ip(t, ns, "link", "set", b, "up")
}

func TestAddGetDelFlushAgainstIP(t *testing.T) {
	requireNetNS(t)
	ns := newNetNS(t)
	addVeth(t, ns, "va", "vb")
	va := ifIndex(t, ns, "va")
	// A signal endpoint with a port gets a kernel listener: its address must be local.
	ip(t, ns, "addr", "add", "10.0.0.2/24", "dev", "va")
	c := dialIn(t, ns)

	checkAgainstIP(t, c, ns, nil)

	want := []Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.1"), Flags: FlagSubflow | FlagBackup, IfIndex: va},
		{Addr: netip.MustParseAddr("fd00::1"), Flags: FlagSubflow | FlagFullmesh},
		{ID: 7, Addr: netip.MustParseAddr("10.0.0.2"), Port: 4000, Flags: FlagSignal},
	}
	for _, e := range want {
		if err := c.AddEndpoint(e); err != nil {
			t.Fatal(err)
		}
	}
	got := checkAgainstIP(t, c, ns, want)

	// GET_ADDR for one id returns the same as the dump.
	for _, g := range got {
		e, err := c.Endpoint(g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if e != g {
			t.Errorf("Endpoint(%d) = %v, dump has %v", g.ID, e, g)
		}
	}

	// What iproute2 adds, the client reads.
	ip(t, ns, "mptcp", "endpoint", "add", "10.9.9.9", "id", "20", "signal")
	want = append(want, Endpoint{ID: 20, Addr: netip.MustParseAddr("10.9.9.9"), Flags: FlagSignal})
	checkAgainstIP(t, c, ns, want)

	if err := c.DelEndpoint(7); err != nil {
		t.Fatal(err)
	}
	want = append(want[:2], want[3])
	checkAgainstIP(t, c, ns, want)

	if err := c.FlushEndpoints(); err != nil {
		t.Fatal(err)
	}
	checkAgainstIP(t, c, ns, nil)
}

func TestLimitsAgainstIP(t *testing.T) {
	requireNetNS(t)
	ns := newNetNS(t)
	c := dialIn(t, ns)

	l, err := c.Limits()
	if err != nil {
		t.Fatal(err)
	}
	if fromIP := ipLimits(t, ns); l != fromIP {
		t.Fatalf("Limits() = %v, ip says %v", l, fromIP)
	}

	want := Limits{Subflows: 3, AddAddrAccepted: 5}
	if err := c.SetLimits(want); err != nil {
		t.Fatal(err)
	}
	if fromIP := ipLimits(t, ns); fromIP != want {
		t.Fatalf("after SetLimits(%v) ip says %v", want, fromIP)
	}

	ip(t, ns, "mptcp", "limits", "set", "subflows", "1", "add_addr_accepted", "8")
	l, err = c.Limits()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Limits{Subflows: 1, AddAddrAccepted: 8}); l != want {
		t.Fatalf("Limits() = %v after ip set %v", l, want)
	}

	err = c.SetLimits(Limits{Subflows: 9})
	if err == nil || !strings.Contains(err.Error(), "Subflows") {
		t.Fatalf("SetLimits(subflows 9) = %v, want an error naming Subflows", err)
	}
	err = c.SetLimits(Limits{Subflows: 1, AddAddrAccepted: 100})
	if err == nil || !strings.Contains(err.Error(), "AddAddrAccepted") {
		t.Fatalf("SetLimits(add_addr_accepted 100) = %v, want an error naming AddAddrAccepted", err)
	}
	if fromIP := ipLimits(t, ns); fromIP != (Limits{Subflows: 1, AddAddrAccepted: 8}) {
		t.Fatalf("rejected SetLimits changed the kernel's limits: %v", fromIP)
	}

	// EnsureLimits: sets what differs, twice is the same as once, and a bad
	// limit is still refused by name.
	ens := Limits{Subflows: 4, AddAddrAccepted: 4}
	for i := 0; i < 2; i++ {
		if err := c.EnsureLimits(ens); err != nil {
			t.Fatalf("EnsureLimits(%v) #%d: %v", ens, i+1, err)
		}
		if fromIP := ipLimits(t, ns); fromIP != ens {
			t.Fatalf("after EnsureLimits(%v) #%d ip says %v", ens, i+1, fromIP)
		}
	}
	if err := c.EnsureLimits(Limits{Subflows: 9}); err == nil || !strings.Contains(err.Error(), "Subflows") {
		t.Fatalf("EnsureLimits(subflows 9) = %v, want an error naming Subflows", err)
	}
}

func TestSetFlagsAgainstIP(t *testing.T) {
	requireNetNS(t)
	ns := newNetNS(t)
	c := dialIn(t, ns)

	a := netip.MustParseAddr("10.0.0.1")
	if err := c.AddEndpoint(Endpoint{Addr: a, Flags: FlagSubflow}); err != nil {
		t.Fatal(err)
	}
	got := checkAgainstIP(t, c, ns, []Endpoint{{Addr: a, Flags: FlagSubflow}})
	id := got[0].ID

	// By id.
	if err := c.SetFlags(Endpoint{ID: id, Flags: FlagSubflow | FlagBackup}); err != nil {
		t.Fatal(err)
	}
	checkAgainstIP(t, c, ns, []Endpoint{{ID: id, Addr: a, Flags: FlagSubflow | FlagBackup}})

	// By address; fullmesh is settable too.
	if err := c.SetFlags(Endpoint{Addr: a, Flags: FlagSubflow | FlagFullmesh}); err != nil {
		t.Fatal(err)
	}
	checkAgainstIP(t, c, ns, []Endpoint{{ID: id, Addr: a, Flags: FlagSubflow | FlagFullmesh}})

	// Back to plain, via iproute2 reading what we wrote.
	if err := c.SetFlags(Endpoint{ID: id, Flags: FlagSubflow}); err != nil {
		t.Fatal(err)
	}
	checkAgainstIP(t, c, ns, []Endpoint{{ID: id, Addr: a, Flags: FlagSubflow}})
}

func TestEnsureEndpointIdempotent(t *testing.T) {
	requireNetNS(t)
	ns := newNetNS(t)
	addVeth(t, ns, "va", "vb")
	va := ifIndex(t, ns, "va")
	ip(t, ns, "addr", "add", "10.0.0.1/24", "dev", "va")
	c := dialIn(t, ns)

	a := netip.MustParseAddr("10.0.0.1")
	other := Endpoint{Addr: netip.MustParseAddr("10.0.0.9"), Flags: FlagSubflow}
	if err := c.AddEndpoint(other); err != nil {
		t.Fatal(err)
	}

	e := Endpoint{Addr: a, Flags: FlagSubflow}
	first, err := c.EnsureEndpoint(e)
	if err != nil {
		t.Fatal(err)
	}
	before := ip(t, ns, "mptcp", "endpoint", "show")
	second, err := c.EnsureEndpoint(e)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("EnsureEndpoint twice: %v then %v", first, second)
	}
	if after := ip(t, ns, "mptcp", "endpoint", "show"); after != before {
		t.Fatalf("second EnsureEndpoint changed the kernel:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	checkAgainstIP(t, c, ns, []Endpoint{other, first})

	// Only backup differs: SET_FLAGS keeps the id (a delete would close the
	// subflows from this address).
	e.Flags |= FlagBackup
	got, err := c.EnsureEndpoint(e)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != first.ID || got.Flags != e.Flags {
		t.Fatalf("EnsureEndpoint(+backup) = %v, want id %d with %q", got, first.ID, e.Flags)
	}
	checkAgainstIP(t, c, ns, []Endpoint{other, got})

	// Device differs: delete+add.
	e.IfIndex = va
	got, err = c.EnsureEndpoint(e)
	if err != nil {
		t.Fatal(err)
	}
	if got.IfIndex != va {
		t.Fatalf("EnsureEndpoint(dev va) = %v", got)
	}
	checkAgainstIP(t, c, ns, []Endpoint{other, {ID: got.ID, Addr: a, Flags: e.Flags, IfIndex: va}})
	again, err := c.EnsureEndpoint(e)
	if err != nil || again != got {
		t.Fatalf("EnsureEndpoint repeated = %v, %v; want %v", again, err, got)
	}

	// Two endpoints for the address (a signal one with a port may coexist):
	// exactly one must remain.
	ip(t, ns, "mptcp", "endpoint", "add", "10.0.0.1", "port", "4001", "signal")
	if n := len(ipEndpoints(t, ns)); n != 3 {
		t.Fatalf("setup: want 3 endpoints, ip shows %d", n)
	}
	got, err = c.EnsureEndpoint(e)
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstIP(t, c, ns, []Endpoint{other, {ID: got.ID, Addr: a, Flags: e.Flags, IfIndex: va}})

	// A requested id is honoured.
	e.ID = 42
	got, err = c.EnsureEndpoint(e)
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstIP(t, c, ns, []Endpoint{other, e})
}

func TestErrors(t *testing.T) {
	requireNetNS(t)
	ns := newNetNS(t)
	c := dialIn(t, ns)

	err := c.DelEndpoint(42)
	if err == nil {
		t.Fatal("DelEndpoint(42) on an empty namespace succeeded")
	}
	if !strings.Contains(err.Error(), "DEL_ADDR(id 42)") || !errors.Is(err, ErrNotFound) {
		t.Errorf("DelEndpoint(42) = %q, want it to name DEL_ADDR(id 42) and wrap ErrNotFound", err)
	}
	if _, err := c.Endpoint(42); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "id 42") {
		t.Errorf("Endpoint(42) = %v, want ErrNotFound naming id 42", err)
	}
	if err := c.DelEndpoint(0); err == nil {
		t.Error("DelEndpoint(0) succeeded; the kernel would silently touch every connection's initial subflow")
	}
	if err := c.SetFlags(Endpoint{ID: 9, Flags: FlagBackup}); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetFlags(id 9) = %v, want ErrNotFound", err)
	}

	if err := c.AddEndpoint(Endpoint{Flags: FlagSubflow}); err == nil || !strings.Contains(err.Error(), "Addr") {
		t.Errorf("AddEndpoint(no addr) = %v, want an error naming Addr", err)
	}
	if err := c.AddEndpoint(Endpoint{Addr: netip.IPv4Unspecified(), Flags: FlagSubflow}); err == nil || !strings.Contains(err.Error(), "Addr") {
		t.Errorf("AddEndpoint(0.0.0.0) = %v, want an error naming Addr", err)
	}
	if err := c.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), IfIndex: -1}); err == nil || !strings.Contains(err.Error(), "IfIndex") {
		t.Errorf("AddEndpoint(ifindex -1) = %v, want an error naming IfIndex", err)
	}
	err = c.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 5000, Flags: FlagSubflow})
	if err == nil || !strings.Contains(err.Error(), "ADD_ADDR(10.0.0.1 port 5000") || !strings.Contains(err.Error(), "Port") {
		t.Errorf("AddEndpoint(subflow with port) = %v, want an error naming Port", err)
	}
	if err := c.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Flags: FlagSignal | FlagFullmesh}); err == nil || !strings.Contains(err.Error(), "Flags") {
		t.Errorf("AddEndpoint(signal fullmesh) = %v, want an error naming Flags", err)
	}
	// A kernel-side rejection carries the kernel's extended-ack text: a
	// port listener needs a local address.
	err = c.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("192.0.2.77"), Port: 5000, Flags: FlagSignal})
	if err == nil || !strings.Contains(err.Error(), "192.0.2.77 port 5000") || !strings.Contains(err.Error(), "listen socket") {
		t.Errorf("AddEndpoint(signal port on a non-local address) = %v, want the kernel's message", err)
	}
	dup := Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Flags: FlagSubflow}
	if err := c.AddEndpoint(dup); err != nil {
		t.Fatal(err)
	}
	if err := c.AddEndpoint(dup); err == nil || !strings.Contains(err.Error(), "10.0.0.2") {
		t.Errorf("AddEndpoint(duplicate) = %v, want an error naming 10.0.0.2", err)
	}
	if _, err := c.EnsureEndpoint(Endpoint{Addr: dup.Addr, Flags: FlagImplicit}); err == nil {
		t.Error("EnsureEndpoint(implicit) succeeded")
	}
	// An impossible wish must not delete the existing endpoint first.
	if _, err := c.EnsureEndpoint(Endpoint{Addr: dup.Addr, Port: 1, Flags: FlagSubflow}); err == nil {
		t.Error("EnsureEndpoint(subflow with port) succeeded")
	}
	// Nothing above may have left anything behind but dup.
	checkAgainstIP(t, c, ns, []Endpoint{dup})
}

// TestDialNetNS checks the variant that needs no thread switching.
func TestDialNetNS(t *testing.T) {
	requireNetNS(t)
	ns := newNetNS(t)
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := DialNetNS(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := Endpoint{Addr: netip.MustParseAddr("192.0.2.1"), Flags: FlagSignal}
	if err := c.AddEndpoint(e); err != nil {
		t.Fatal(err)
	}
	checkAgainstIP(t, c, ns, []Endpoint{e})
	// The test's own namespace is untouched.
	self, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	eps, err := self.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range eps {
		if x.Addr == e.Addr {
			t.Fatalf("endpoint leaked into the caller's namespace: %v", x)
		}
	}
}

// TestConcurrentUse runs readers against a writer on one Client (for -race
// and for replies getting mixed up between concurrent requests).
func TestConcurrentUse(t *testing.T) {
	requireNetNS(t)
	ns := newNetNS(t)
	c := dialIn(t, ns)
	if err := c.SetLimits(Limits{Subflows: 4, AddAddrAccepted: 4}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	errs := make(chan error, 3)
	for i := 0; i < 2; i++ {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				l, err := c.Limits()
				if err == nil && l != (Limits{Subflows: 4, AddAddrAccepted: 4}) {
					err = fmt.Errorf("Limits() = %v while nobody changes them", l)
				}
				if err == nil {
					_, err = c.Endpoints()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	e := Endpoint{ID: 5, Addr: netip.MustParseAddr("10.0.0.5"), Flags: FlagSubflow}
	for i := 0; i < 50; i++ {
		if err := c.AddEndpoint(e); err != nil {
			t.Fatal(err)
		}
		if err := c.DelEndpoint(e.ID); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	checkAgainstIP(t, c, ns, nil)
}
