package dhcp4

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// ack builds a server ACK for ip/24 from 192.0.2.1 with the given times (0 = option absent).
func ack(t *testing.T, ip string, lease, t1, t2 time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.ParseIP(ip)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.ParseIP("192.0.2.1"))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("192.0.2.1"))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.ParseIP("192.0.2.53"))),
	}
	if lease > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lease)))
	}
	if t1 > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(t1)))
	}
	if t2 > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(t2)))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFromACK(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name           string
		lease, t1, t2  time.Duration
		wantT1, wantT2 uint32
	}{
		{"defaults", 3600 * time.Second, 0, 0, 1800, 3150},
		{"explicit", 3600 * time.Second, 1000 * time.Second, 2000 * time.Second, 1000, 2000},
		{"t2 past lease", 100 * time.Second, 10 * time.Second, 500 * time.Second, 10, 87},
		{"t1 past t2", 100 * time.Second, 90 * time.Second, 80 * time.Second, 50, 80},
	} {
		l, err := FromACK(nil, ack(t, "192.0.2.10", tc.lease, tc.t1, tc.t2), now)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if l.RenewSeconds != tc.wantT1 || l.RebindSeconds != tc.wantT2 {
			t.Errorf("%s: T1/T2 = %d/%d, want %d/%d", tc.name, l.RenewSeconds, l.RebindSeconds, tc.wantT1, tc.wantT2)
		}
		if got := l.Expiry().Sub(now); got != tc.lease {
			t.Errorf("%s: expiry after %v, want %v", tc.name, got, tc.lease)
		}
	}
	l, err := FromACK(nil, ack(t, "192.0.2.10", 3600*time.Second, 0, 0), now)
	if err != nil {
		t.Fatal(err)
	}
	if l.Address != netip.MustParsePrefix("192.0.2.10/24") || l.Router != netip.MustParseAddr("192.0.2.1") ||
		l.Server != netip.MustParseAddr("192.0.2.1") || len(l.DNS) != 1 {
		t.Errorf("lease = %+v", l)
	}
	inf, err := FromACK(nil, ack(t, "192.0.2.10", Infinite*time.Second, 0, 0), now)
	if err != nil {
		t.Fatal(err)
	}
	if !inf.Infinite() || !inf.RenewAt().IsZero() || inf.Expired(now.Add(1000*time.Hour)) {
		t.Errorf("infinite lease = %+v", inf)
	}
	if _, err := FromACK(nil, ack(t, "192.0.2.10", 0, 0, 0), now); err == nil {
		t.Error("ACK without lease time accepted")
	}
	if _, err := FromACK(nil, ack(t, "0.0.0.0", time.Hour, 0, 0), now); err == nil {
		t.Error("ACK with yiaddr 0.0.0.0 accepted")
	}
}

func TestStore(t *testing.T) {
	s := &Store{Path: filepath.Join(t.TempDir(), "sub", "lease.json")}
	if l, err := s.Load(); l != nil || err != nil {
		t.Fatalf("empty store: %v, %v", l, err)
	}
	l, err := FromACK(nil, ack(t, "192.0.2.10", time.Hour, 0, 0), time.Now().Round(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(l); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Address != l.Address || !got.Obtained.Equal(l.Obtained) || got.LeaseSeconds != 3600 {
		t.Errorf("round trip: %+v, want %+v", got, l)
	}
	if _, _, err := got.packets(); err != nil {
		t.Errorf("stored ACK does not decode: %v", err)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.Load(); l != nil {
		t.Error("lease survived Remove")
	}
}

// fakeTransport scripts the server: each method pops its next answer.
type fakeTransport struct {
	t     *testing.T
	mu    sync.Mutex
	calls []string
	// answer returns the lease for a call, or an error; nil error with
	// nil lease means "silence until the deadline".
	answer func(call string, n int, l *Lease) (*Lease, error)
	n      map[string]int
}

func (f *fakeTransport) do(ctx context.Context, call string, l *Lease) (*Lease, error) {
	f.mu.Lock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[call]++
	n := f.n[call]
	f.calls = append(f.calls, call)
	f.mu.Unlock()
	nl, err := f.answer(call, n, l)
	if nl == nil && err == nil {
		<-ctx.Done()
		return nil, fmt.Errorf("%s: %w", call, ctx.Err())
	}
	return nl, err
}

func (f *fakeTransport) Discover(ctx context.Context) (*Lease, error) {
	return f.do(ctx, "discover", nil)
}
func (f *fakeTransport) Reboot(ctx context.Context, l *Lease) (*Lease, error) {
	return f.do(ctx, "reboot", l)
}
func (f *fakeTransport) Renew(ctx context.Context, l *Lease) (*Lease, error) {
	return f.do(ctx, "renew", l)
}
func (f *fakeTransport) Rebind(ctx context.Context, l *Lease) (*Lease, error) {
	return f.do(ctx, "rebind", l)
}
func (f *fakeTransport) Close() error { return nil }

func (f *fakeTransport) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type stamped struct {
	Update
	at time.Time
}

func run(t *testing.T, f *fakeTransport, store *Store) (<-chan stamped, context.CancelFunc) {
	t.Helper()
	ch := make(chan stamped, 32)
	c := &Client{Transport: f, Store: store, MinRetry: 100 * time.Millisecond,
		DiscoverBackoff: 50 * time.Millisecond, RebootTimeout: 500 * time.Millisecond,
		Notify: func(u Update) { ch <- stamped{u, time.Now()} }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return ch, cancel
}

func next(t *testing.T, ch <-chan stamped, within time.Duration) stamped {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(within):
		t.Fatalf("no update within %v", within)
		return stamped{}
	}
}

func (f *fakeTransport) lease(ip string, lease, t1, t2 time.Duration) *Lease {
	l, err := FromACK(nil, ack(f.t, ip, lease, t1, t2), time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

// Renew at T1, the server silent for renew so rebind at T2 answers.
func TestRenewThenRebind(t *testing.T) {
	t.Parallel()
	f := &fakeTransport{t: t}
	f.answer = func(call string, n int, _ *Lease) (*Lease, error) {
		switch {
		case call == "discover":
			return f.lease("192.0.2.10", 3*time.Second, time.Second, 2*time.Second), nil
		case call == "renew" && n == 1:
			return f.lease("192.0.2.10", 3*time.Second, time.Second, 2*time.Second), nil
		case call == "renew":
			return nil, nil // silent
		case call == "rebind":
			return f.lease("192.0.2.10", 60*time.Second, 30*time.Second, 50*time.Second), nil
		}
		return nil, errors.New("unexpected " + call)
	}
	ch, _ := run(t, f, nil)
	u := next(t, ch, 2*time.Second)
	if u.Kind != Bound || u.Reason != "obtained" {
		t.Fatalf("first update %v %q", u.Kind, u.Reason)
	}
	bound := u.Lease
	u = next(t, ch, 3*time.Second)
	if u.Kind != Renewed || u.Reason != "renewed" {
		t.Fatalf("second update %v %q", u.Kind, u.Reason)
	}
	if u.at.Before(bound.RenewAt()) {
		t.Errorf("renewed at %v, before T1 %v", u.at, bound.RenewAt())
	}
	renewed := u.Lease
	u = next(t, ch, 4*time.Second)
	if u.Kind != Renewed || u.Reason != "rebound" {
		t.Fatalf("third update %v %q", u.Kind, u.Reason)
	}
	if u.at.Before(renewed.RebindAt()) || u.at.After(renewed.Expiry()) {
		t.Errorf("rebound at %v, outside [T2 %v, expiry %v]", u.at, renewed.RebindAt(), renewed.Expiry())
	}
}

// With no server at all, the loss is reported at expiry, not later.
func TestExpiryReportedAtOnce(t *testing.T) {
	t.Parallel()
	f := &fakeTransport{t: t}
	f.answer = func(call string, n int, _ *Lease) (*Lease, error) {
		if call == "discover" && n == 1 {
			return f.lease("192.0.2.10", 3*time.Second, time.Second, 2*time.Second), nil
		}
		if call == "discover" {
			return nil, errors.New("no offer")
		}
		return nil, nil
	}
	store := &Store{Path: filepath.Join(t.TempDir(), "lease.json")}
	ch, _ := run(t, f, store)
	b := next(t, ch, 2*time.Second)
	if b.Kind != Bound {
		t.Fatalf("first update %v", b.Kind)
	}
	if l, _ := store.Load(); l == nil || l.Address != b.Lease.Address {
		t.Fatalf("bound lease not persisted: %+v", l)
	}
	u := next(t, ch, 6*time.Second)
	if u.Kind != Lost || u.Reason != "expired" {
		t.Fatalf("update %v %q, want lost/expired", u.Kind, u.Reason)
	}
	exp := b.Lease.Expiry()
	if late := u.at.Sub(exp); late < 0 || late > 250*time.Millisecond {
		t.Errorf("loss reported %v after expiry", late)
	}
	if l, _ := store.Load(); l != nil {
		t.Error("expired lease still stored")
	}
	calls := f.callList()
	var sawRenew, sawRebind bool
	for _, c := range calls {
		sawRenew = sawRenew || c == "renew"
		sawRebind = sawRebind || c == "rebind"
	}
	if !sawRenew || !sawRebind {
		t.Errorf("calls %v: want renew and rebind attempts before expiry", calls)
	}
}

func TestNAKOnRenewIsLoss(t *testing.T) {
	t.Parallel()
	f := &fakeTransport{t: t}
	f.answer = func(call string, n int, _ *Lease) (*Lease, error) {
		switch call {
		case "discover":
			if n == 1 {
				return f.lease("192.0.2.10", 20*time.Second, time.Second, 0), nil
			}
			return f.lease("192.0.2.11", 20*time.Second, 10*time.Second, 0), nil
		case "renew":
			return nil, fmt.Errorf("DHCP renew: %w (wrong network)", ErrNAK)
		}
		return nil, nil
	}
	ch, _ := run(t, f, nil)
	b := next(t, ch, 2*time.Second)
	u := next(t, ch, 3*time.Second)
	if u.Kind != Lost || u.Reason != "nak" || !errors.Is(u.Err, ErrNAK) {
		t.Fatalf("update %v %q %v, want lost/nak", u.Kind, u.Reason, u.Err)
	}
	if d := u.at.Sub(b.Lease.RenewAt()); d < 0 || d > 250*time.Millisecond {
		t.Errorf("NAK at T1 reported %v after T1", d)
	}
	u = next(t, ch, 2*time.Second)
	if u.Kind != Bound || u.Lease.Address.Addr().String() != "192.0.2.11" {
		t.Fatalf("after NAK: %v %v, want a new binding", u.Kind, u.Lease.Address)
	}
}

func TestRestartReusesStoredLease(t *testing.T) {
	t.Parallel()
	store := &Store{Path: filepath.Join(t.TempDir(), "lease.json")}
	for _, tc := range []struct {
		name      string
		reboot    func(f *fakeTransport) (*Lease, error)
		want      []string // update reasons in order
		discovers bool
	}{
		{"acked", func(f *fakeTransport) (*Lease, error) {
			return f.lease("192.0.2.10", time.Hour, 0, 0), nil
		}, []string{"rebooted"}, false},
		{"silent", func(*fakeTransport) (*Lease, error) { return nil, nil }, []string{"persisted"}, false},
		{"nak", func(*fakeTransport) (*Lease, error) { return nil, fmt.Errorf("reboot: %w", ErrNAK) },
			[]string{"nak", "obtained"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTransport{t: t}
			if err := store.Save(f.lease("192.0.2.10", time.Hour, 0, 0)); err != nil {
				t.Fatal(err)
			}
			f.answer = func(call string, n int, _ *Lease) (*Lease, error) {
				switch call {
				case "reboot":
					return tc.reboot(f)
				case "discover":
					return f.lease("192.0.2.20", time.Hour, 0, 0), nil
				}
				return nil, nil
			}
			ch, cancel := run(t, f, store)
			for _, want := range tc.want {
				if u := next(t, ch, 2*time.Second); u.Reason != want {
					t.Fatalf("update %v %q, want %q", u.Kind, u.Reason, want)
				}
			}
			cancel()
			var discovered bool
			for _, c := range f.callList() {
				discovered = discovered || c == "discover"
			}
			if discovered != tc.discovers {
				t.Errorf("calls %v: discover=%v, want %v", f.callList(), discovered, tc.discovers)
			}
		})
	}
}
