package ethernet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/dhcp4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is every side effect the manager has. The production value talks
// netlink (NewKernel); unit tests record calls instead.
type Kernel interface {
	// EnsureVLAN creates (or adopts) the 802.1Q link "<parent>.<vid>" and
	// returns its name.
	EnsureVLAN(parent string, vid int) (string, error)
	SetUp(dev string) error
	// WatchCarrier calls fn with dev's carrier now and on every change
	// until ctx ends. It must survive netlink receive errors.
	WatchCarrier(ctx context.Context, dev string, fn func(carrier bool)) error
	// ReplaceAddr sets p on dev with lifetimes (0 = forever).
	ReplaceAddr(dev string, p netip.Prefix, valid, preferred time.Duration) error
	DelAddr(dev string, p netip.Prefix) error
	// ReplaceDefault sets the default route via gw (src as preferred
	// source) in table.
	ReplaceDefault(dev string, gw, src netip.Addr, table int) error
	DelDefault(dev string, table int) error
	// DialDHCP opens a DHCP transport on dev in the kernel's namespace.
	DialDHCP(dev string, o dhcp4.TransportOptions) (dhcp4.Transport, error)
}

// NewKernel returns the netlink Kernel for namespace ns; a closed handle
// (netns.None()) means the caller's own namespace.
func NewKernel(ns netns.NsHandle, log *slog.Logger) (Kernel, error) {
	if log == nil {
		log = slog.Default()
	}
	var h *netlink.Handle
	var err error
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netlink.NewHandle: %w", err)
	}
	return &kernel{h: h, ns: ns, log: log, subscribe: netlink.LinkSubscribeWithOptions}, nil
}

type kernel struct {
	h   *netlink.Handle
	ns  netns.NsHandle
	log *slog.Logger
	// subscribe is netlink.LinkSubscribeWithOptions; tests replace it to
	// end subscriptions the way a receive error does.
	subscribe func(chan<- netlink.LinkUpdate, <-chan struct{}, netlink.LinkSubscribeOptions) error
}

func (k *kernel) link(dev string) (netlink.Link, error) {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("LinkByName(%s): %w", dev, err)
	}
	return l, nil
}

func (k *kernel) EnsureVLAN(parent string, vid int) (string, error) {
	name := VLANName(parent, vid)
	if len(name) > unix.IFNAMSIZ-1 {
		return "", fmt.Errorf("vlan device name %q longer than %d characters", name, unix.IFNAMSIZ-1)
	}
	p, err := k.link(parent)
	if err != nil {
		return "", err
	}
	if err := k.h.LinkSetUp(p); err != nil {
		return "", fmt.Errorf("LinkSetUp(%s): %w", parent, err)
	}
	if l, err := k.h.LinkByName(name); err == nil {
		if v, ok := l.(*netlink.Vlan); ok && v.VlanId == vid && v.Attrs().ParentIndex == p.Attrs().Index {
			return name, nil // adopt what a previous run made
		}
		// Same name, different link: replace it rather than run on the
		// wrong VLAN.
		if err := k.h.LinkDel(l); err != nil {
			return "", fmt.Errorf("LinkDel(%s) (not vlan %d on %s): %w", name, vid, parent, err)
		}
	}
	v := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: p.Attrs().Index}, VlanId: vid}
	if err := k.h.LinkAdd(v); err != nil {
		return "", fmt.Errorf("LinkAdd(vlan %s id %d): %w", name, vid, err)
	}
	return name, nil
}

func (k *kernel) SetUp(dev string) error {
	l, err := k.link(dev)
	if err != nil {
		return err
	}
	if err := k.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("LinkSetUp(%s): %w", dev, err)
	}
	return nil
}

// carrier is "can carry traffic": administratively up, lower layer up and
// not dormant. A WiFi station is LOWER_UP from association on but stays
// DORMANT until wpa_supplicant has the keys installed (it runs the link in
// dormant mode), so operstate is the one to trust there.
func carrier(a *netlink.LinkAttrs) bool {
	if a.RawFlags&unix.IFF_UP == 0 || a.RawFlags&unix.IFF_LOWER_UP == 0 {
		return false
	}
	switch a.OperState {
	case netlink.OperDown, netlink.OperDormant, netlink.OperLowerLayerDown, netlink.OperNotPresent:
		return false
	}
	return true
}

func (k *kernel) WatchCarrier(ctx context.Context, dev string, fn func(bool)) error {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		ch := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		opts := netlink.LinkSubscribeOptions{
			ListExisting: true, // resync after every (re)subscription
			ErrorCallback: func(err error) {
				if ctx.Err() != nil {
					return // our own close of the subscription
				}
				k.log.Warn("ethernet: netlink link subscription", "dev", dev, "err", err)
			},
		}
		if k.ns.IsOpen() {
			ns := k.ns
			opts.Namespace = &ns
		}
		if err := k.subscribe(ch, done, opts); err != nil {
			k.log.Warn("ethernet: LinkSubscribe", "dev", dev, "err", err)
		} else {
			k.drain(ctx, ch, dev, fn)
			backoff = 50 * time.Millisecond
		}
		close(done)
		// The library ends the subscription (closes ch) on any receive
		// error, e.g. ENOBUFS when events came faster than we read them;
		// subscribe again, the listing above resyncs the state.
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			backoff = min(2*backoff, 2*time.Second)
		}
	}
	return ctx.Err()
}

func (k *kernel) drain(ctx context.Context, ch chan netlink.LinkUpdate, dev string, fn func(bool)) {
	// ListExisting sends nothing for a device that does not exist (yet,
	// e.g. a WiFi interface still being created): that is "no carrier".
	if _, err := k.h.LinkByName(dev); err != nil {
		fn(false)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			a := u.Attrs()
			if a == nil || a.Name != dev {
				continue
			}
			fn(u.Header.Type != unix.RTM_DELLINK && carrier(a))
		}
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func lifetime(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	s := math.Ceil(d.Seconds())
	if s >= math.MaxUint32 {
		return 0 // forever
	}
	return int(s)
}

func (k *kernel) ReplaceAddr(dev string, p netip.Prefix, valid, preferred time.Duration) error {
	l, err := k.link(dev)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: prefixNet(p), ValidLft: lifetime(valid), PreferedLft: lifetime(preferred)}
	if a.ValidLft == 0 {
		a.PreferedLft = 0
	}
	if err := k.h.AddrReplace(l, a); err != nil {
		return fmt.Errorf("AddrReplace(%s, %v valid %ds): %w", dev, p, a.ValidLft, err)
	}
	return nil
}

func (k *kernel) DelAddr(dev string, p netip.Prefix) error {
	l, err := k.link(dev)
	if err != nil {
		return err
	}
	if err := k.h.AddrDel(l, &netlink.Addr{IPNet: prefixNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("AddrDel(%s, %v): %w", dev, p, err)
	}
	return nil
}

func defaultRoute(l netlink.Link, table int) *netlink.Route {
	return &netlink.Route{
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		LinkIndex: l.Attrs().Index,
		Table:     table,
	}
}

func (k *kernel) ReplaceDefault(dev string, gw, src netip.Addr, table int) error {
	l, err := k.link(dev)
	if err != nil {
		return err
	}
	r := defaultRoute(l, table)
	r.Gw = gw.AsSlice()
	if src.IsValid() {
		r.Src = src.AsSlice()
	}
	if err := k.h.RouteReplace(r); err != nil {
		return fmt.Errorf("RouteReplace(default via %v dev %s table %d): %w", gw, dev, table, err)
	}
	return nil
}

func (k *kernel) DelDefault(dev string, table int) error {
	l, err := k.link(dev)
	if err != nil {
		return err
	}
	r := defaultRoute(l, table)
	if err := k.h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("RouteDel(default dev %s table %d): %w", dev, table, err)
	}
	return nil
}

func (k *kernel) DialDHCP(dev string, o dhcp4.TransportOptions) (dhcp4.Transport, error) {
	var t dhcp4.Transport
	err := inNetNS(k.ns, func() error {
		var err error
		t, err = dhcp4.NewTransport(dev, o)
		return err
	})
	return t, err
}

// inNetNS runs fn on a thread switched into ns (sockets fn opens stay
// there). A thread that cannot be switched back is left locked, so the
// runtime retires it instead of reusing it in the wrong namespace.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns.Get: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns.Set(%v): %w", ns, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("netns.Set(back): %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}
