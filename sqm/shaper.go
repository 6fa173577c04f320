package sqm

import (
	"errors"
	"fmt"
	"os/exec"
	"sync"

	tc "github.com/florianl/go-tc"
	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Handles we use. CAKE gets "ca:" so a dump shows at a glance which root qdisc is ours.
const (
	cakeHandle    = 0x00ca0000
	tcHRoot       = 0xffffffff
	tcHIngress    = 0xfffffff1 // parent of the ingress / clsact qdisc
	ingressHandle = 0xffff0000 // "ffff:", parent of filters under an ingress qdisc
	clsactIngress = 0xfffffff2 // TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
	redirectPref  = 49         // filter priority of our redirect; fixed so Ensure can find it again
	ethPAll       = 0x0003
)

// MissingModuleError says the running kernel lacks a tc module we need (sch_cake, ...).
type MissingModuleError struct {
	Module string
	Op     string // the netlink call that failed
	Err    error
}

func (e *MissingModuleError) Error() string {
	return fmt.Sprintf("%s: kernel has no %s (module not built or not loadable): %v", e.Op, e.Module, e.Err)
}

func (e *MissingModuleError) Unwrap() error { return e.Err }

// Options configures a Shaper.
type Options struct {
	// NetNS is an open fd of the network namespace to work in; 0 = the caller's.
	NetNS int
	// LoadModule is tried once when the kernel reports an unknown qdisc/classifier kind, before
	// giving up with a MissingModuleError. nil runs modprobe(8) when it is installed; on
	// gokrazy, where there is none, the kernel's own request_module is all there is.
	LoadModule func(name string) error
}

// Shaper installs and changes CAKE on uplinks. It is safe for concurrent use.
type Shaper struct {
	mu    sync.Mutex
	opts  Options
	tc    *tc.Tc
	raw   *netlink.Conn
	links *vnl.Handle
	// Bounds remembered from Ensure so SetRate can refuse a rate outside [Min, Max].
	shapes map[string]Shape
}

// New opens the netlink sockets a Shaper needs.
func New(o Options) (*Shaper, error) {
	t, err := tc.Open(&tc.Config{NetNS: o.NetNS})
	if err != nil {
		return nil, fmt.Errorf("tc.Open(netns %d): %w", o.NetNS, err)
	}
	// Extended acks carry the kernel's reason ("Specified qdisc kind is unknown.") into errors.
	_ = t.SetOption(netlink.ExtendedAcknowledge, true)
	raw, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: o.NetNS, Strict: true})
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("netlink.Dial(NETLINK_ROUTE, netns %d): %w", o.NetNS, err)
	}
	var h *vnl.Handle
	if o.NetNS != 0 {
		h, err = vnl.NewHandleAt(netns.NsHandle(o.NetNS))
	} else {
		h, err = vnl.NewHandle()
	}
	if err != nil {
		t.Close()
		raw.Close()
		return nil, fmt.Errorf("netlink.NewHandleAt(netns %d): %w", o.NetNS, err)
	}
	if o.LoadModule == nil {
		o.LoadModule = modprobe
	}
	return &Shaper{opts: o, tc: t, raw: raw, links: h, shapes: map[string]Shape{}}, nil
}

func modprobe(name string) error {
	p, err := exec.LookPath("modprobe")
	if err != nil {
		return err
	}
	if out, err := exec.Command(p, name).CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe %s: %v: %s", name, err, out)
	}
	return nil
}

// Close releases the netlink sockets.
func (s *Shaper) Close() error {
	s.links.Close()
	err := s.tc.Close()
	if err2 := s.raw.Close(); err == nil {
		err = err2
	}
	return err
}

// Ensure makes dev's qdiscs match sh and changes nothing when they already do. A rate-only
// difference is applied in place; for a direction with Min/MaxBandwidth a rate already within
// bounds is left alone, because the autorate controller owns it.
func (s *Shaper) Ensure(sh Shape) error {
	if err := sh.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	link, err := s.links.LinkByName(sh.Device)
	if err != nil {
		return fmt.Errorf("LinkByName(%q): %w", sh.Device, err)
	}
	idx := link.Attrs().Index
	if sh.Egress.Bandwidth > 0 {
		if err := s.ensureCake(sh.Device, idx, sh.Egress, false); err != nil {
			return err
		}
	} else if err := s.removeRootCake(sh.Device, idx); err != nil {
		return err
	}
	if sh.Ingress.Bandwidth > 0 {
		ifb, err := s.ensureIFB(IFBName(sh.Device))
		if err != nil {
			return err
		}
		if err := s.ensureCake(IFBName(sh.Device), ifb, sh.Ingress, true); err != nil {
			return err
		}
		if err := s.ensureRedirect(sh.Device, idx, ifb); err != nil {
			return err
		}
	} else if err := s.removeIngress(sh.Device, idx); err != nil {
		return err
	}
	s.shapes[sh.Device] = sh
	return nil
}

func (s *Shaper) rootQdisc(ifindex int) (*Qdisc, error) {
	qs, err := dumpQdiscs(s.raw, ifindex)
	if err != nil {
		return nil, err
	}
	for i := range qs {
		if qs[i].Parent == tcHRoot {
			return &qs[i], nil
		}
	}
	return nil, nil
}

func (s *Shaper) ensureCake(dev string, ifindex int, d Direction, ingress bool) error {
	root, err := s.rootQdisc(ifindex)
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	if root != nil && root.Kind == "cake" {
		cur, err := ParseCakeOptions(root.Options)
		if err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
		if d.MinBandwidth != 0 && cur.Bandwidth >= d.MinBandwidth && cur.Bandwidth <= d.MaxBandwidth {
			d.Bandwidth = cur.Bandwidth
		}
		all, butRate := cur.matches(d, ingress)
		switch {
		case all:
			return nil
		case butRate:
			return s.changeRate(dev, ifindex, root.Handle, d.Bandwidth)
		}
		obj := s.qdiscObject(ifindex, root.Handle, d, ingress, cur.NAT)
		if err := s.tc.Qdisc().Change(obj); err != nil {
			return fmt.Errorf("Qdisc.Change(%s root cake %+v): %w", dev, d, err)
		}
		return nil
	}
	obj := s.qdiscObject(ifindex, cakeHandle, d, ingress, false)
	err = s.tc.Qdisc().Replace(obj)
	if isUnknownKind(err) && !(d.NAT && errors.Is(err, unix.EOPNOTSUPP)) {
		if lerr := s.opts.LoadModule("sch_cake"); lerr == nil {
			err = s.tc.Qdisc().Replace(obj)
		}
		if isUnknownKind(err) {
			return &MissingModuleError{Module: "sch_cake", Op: fmt.Sprintf("Qdisc.Replace(%s root cake)", dev), Err: err}
		}
	}
	if err != nil {
		return fmt.Errorf("Qdisc.Replace(%s root cake %+v): %w", dev, d, err)
	}
	return nil
}

// isUnknownKind: qdisc_create/tcf_proto_lookup_ops answer ENOENT for a kind the kernel does
// not know (after request_module failed); some builds answer EOPNOTSUPP.
func isUnknownKind(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP)
}

func (s *Shaper) qdiscObject(ifindex int, handle uint32, d Direction, ingress, natOff bool) *tc.Object {
	return &tc.Object{
		Msg:       tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Handle: handle, Parent: tcHRoot},
		Attribute: tc.Attribute{Kind: "cake", Cake: cakeObject(d, ingress, natOff)},
	}
}

// changeRate is "tc qdisc change ... cake bandwidth X": RTM_NEWQDISC without NLM_F_CREATE or
// NLM_F_REPLACE on the existing handle, carrying only TCA_CAKE_BASE_RATE64, so cake_change
// keeps every other option, its queues and its counters.
func (s *Shaper) changeRate(dev string, ifindex int, handle uint32, bps uint64) error {
	rate := bps / 8
	obj := &tc.Object{
		Msg:       tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Handle: handle, Parent: tcHRoot},
		Attribute: tc.Attribute{Kind: "cake", Cake: &tc.Cake{BaseRate: &rate}},
	}
	if err := s.tc.Qdisc().Change(obj); err != nil {
		return fmt.Errorf("Qdisc.Change(%s root cake bandwidth %dbit): %w", dev, bps, err)
	}
	return nil
}

func (s *Shaper) ensureIFB(name string) (int, error) {
	l, err := s.links.LinkByName(name)
	if err != nil {
		var nf vnl.LinkNotFoundError
		if !errors.As(err, &nf) {
			return 0, fmt.Errorf("LinkByName(%q): %w", name, err)
		}
		ifb := &vnl.Ifb{LinkAttrs: vnl.LinkAttrs{Name: name, TxQLen: 1000}}
		if err := s.links.LinkAdd(ifb); err != nil {
			return 0, fmt.Errorf("LinkAdd(ifb %q): %w", name, err)
		}
		if l, err = s.links.LinkByName(name); err != nil {
			return 0, fmt.Errorf("LinkByName(%q): %w", name, err)
		}
	}
	if l.Type() != "ifb" {
		return 0, fmt.Errorf("ensureIFB(%q): a %s link of that name exists", name, l.Type())
	}
	if l.Attrs().Flags&unix.IFF_UP == 0 {
		if err := s.links.LinkSetUp(l); err != nil {
			return 0, fmt.Errorf("LinkSetUp(%q): %w", name, err)
		}
	}
	return l.Attrs().Index, nil
}

// ensureRedirect sends everything arriving on dev to the IFB's egress, where CAKE shapes it.
func (s *Shaper) ensureRedirect(dev string, ifindex, ifb int) error {
	qs, err := dumpQdiscs(s.raw, ifindex)
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	parent := uint32(0)
	for _, q := range qs {
		if q.Parent != tcHIngress {
			continue
		}
		switch q.Kind {
		case "ingress":
			parent = ingressHandle
		case "clsact": // someone (e.g. a BPF program) set clsact up; share its ingress hook
			parent = clsactIngress
		default:
			return fmt.Errorf("%s: unexpected %s qdisc on the ingress hook", dev, q.Kind)
		}
	}
	if parent == 0 {
		obj := &tc.Object{
			Msg:       tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Handle: ingressHandle, Parent: tcHIngress},
			Attribute: tc.Attribute{Kind: "ingress"},
		}
		if err := s.tc.Qdisc().Add(obj); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
				return &MissingModuleError{Module: "sch_ingress", Op: fmt.Sprintf("Qdisc.Add(%s ingress)", dev), Err: err}
			}
			return fmt.Errorf("Qdisc.Add(%s ingress): %w", dev, err)
		}
		parent = ingressHandle
	}
	fs, err := dumpFilters(s.raw, ifindex, parent)
	if err != nil {
		return err
	}
	stale := false
	for _, f := range fs {
		if f.Pref != redirectPref {
			continue
		}
		if f.RedirectTo == ifb {
			return nil
		}
		stale = true
	}
	if stale {
		if err := s.deleteRedirect(ifindex, parent); err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
	}
	return s.addRedirect(dev, ifindex, parent, ifb)
}

// addRedirect prefers matchall, the classifier made for "every packet". The lab host's kernel
// has no cls_matchall (nor cls_basic or flower), so we fall back to u32 with an all-zero key
// ("u32 match u32 0 0"): u32 is in virtually every kernel config, needs no program to load and
// matches every packet of every protocol. cls_bpf would need a (classic) BPF program and
// verifier support for no gain here.
func (s *Shaper) addRedirect(dev string, ifindex int, parent uint32, ifb int) error {
	actions := func() *[]*tc.Action {
		return &[]*tc.Action{{
			Kind: "mirred",
			Mirred: &tc.Mirred{Parms: &tc.MirredParam{
				Action:  4, // TC_ACT_STOLEN: the packet now belongs to the IFB
				Eaction: 1, // TCA_EGRESS_REDIR
				IfIndex: uint32(ifb),
			}},
		}}
	}
	msg := tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Parent: parent,
		Info: redirectPref<<16 | uint32(htons(ethPAll))}
	err := s.tc.Filter().Add(&tc.Object{Msg: msg, Attribute: tc.Attribute{
		Kind: "matchall", Matchall: &tc.Matchall{Actions: actions()},
	}})
	if err == nil {
		return nil
	}
	if !isUnknownKind(err) {
		return fmt.Errorf("Filter.Add(%s matchall mirred → ifindex %d): %w", dev, ifb, err)
	}
	terminal := uint8(1) // TC_U32_TERMINAL, as tc sets it when an action follows the match
	err = s.tc.Filter().Add(&tc.Object{Msg: msg, Attribute: tc.Attribute{
		Kind: "u32", U32: &tc.U32{
			Sel:     &tc.U32Sel{Flags: terminal, NKeys: 1, Keys: []tc.U32Key{{Mask: 0, Val: 0}}},
			Actions: actions(),
		},
	}})
	if isUnknownKind(err) {
		return &MissingModuleError{Module: "cls_matchall or cls_u32", Op: fmt.Sprintf("Filter.Add(%s u32 mirred)", dev), Err: err}
	}
	if err != nil {
		return fmt.Errorf("Filter.Add(%s u32 match u32 0 0 mirred → ifindex %d): %w", dev, ifb, err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (s *Shaper) deleteRedirect(ifindex int, parent uint32) error {
	// Deleting by priority (no handle, no kind) removes the whole filter chain at that pref.
	msg := tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Parent: parent,
		Info: redirectPref<<16 | uint32(htons(ethPAll))}
	err := s.tc.Filter().Delete(&tc.Object{Msg: msg, Attribute: tc.Attribute{Kind: "u32"}})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("Filter.Delete(pref %d): %w", redirectPref, err)
	}
	return nil
}

func (s *Shaper) removeRootCake(dev string, ifindex int) error {
	root, err := s.rootQdisc(ifindex)
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	if root == nil || root.Kind != "cake" {
		return nil
	}
	obj := &tc.Object{
		Msg:       tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Handle: root.Handle, Parent: tcHRoot},
		Attribute: tc.Attribute{Kind: "cake", Cake: &tc.Cake{}},
	}
	if err := s.tc.Qdisc().Delete(obj); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("Qdisc.Delete(%s root cake): %w", dev, err)
	}
	return nil
}

// removeIngress undoes the ingress half: our redirect (the whole ingress qdisc when it is a
// plain ingress qdisc, only our filter under a shared clsact) and the IFB.
func (s *Shaper) removeIngress(dev string, ifindex int) error {
	if ifindex != 0 {
		qs, err := dumpQdiscs(s.raw, ifindex)
		if err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
		for _, q := range qs {
			if q.Parent != tcHIngress {
				continue
			}
			switch q.Kind {
			case "ingress":
				obj := &tc.Object{
					Msg:       tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Handle: ingressHandle, Parent: tcHIngress},
					Attribute: tc.Attribute{Kind: "ingress"},
				}
				if err := s.tc.Qdisc().Delete(obj); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("Qdisc.Delete(%s ingress): %w", dev, err)
				}
			case "clsact":
				if err := s.deleteRedirect(ifindex, clsactIngress); err != nil {
					return fmt.Errorf("%s: %w", dev, err)
				}
			}
		}
	}
	name := IFBName(dev)
	l, err := s.links.LinkByName(name)
	if err != nil {
		var nf vnl.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("LinkByName(%q): %w", name, err)
	}
	if l.Type() != "ifb" {
		return nil // not ours
	}
	if err := s.links.LinkDel(l); err != nil {
		return fmt.Errorf("LinkDel(%q): %w", name, err)
	}
	return nil
}

// Remove takes CAKE, the redirect and the IFB off dev. The uplink itself may already be gone
// (the IFB is still removed); removing twice is not an error.
func (s *Shaper) Remove(dev string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.shapes, dev)
	idx := 0
	if l, err := s.links.LinkByName(dev); err == nil {
		idx = l.Attrs().Index
		if err := s.removeRootCake(dev, idx); err != nil {
			return err
		}
	} else {
		var nf vnl.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("LinkByName(%q): %w", dev, err)
		}
	}
	return s.removeIngress(dev, idx)
}

// shapedDevice is where dir of dev is shaped: dev itself or its IFB.
func (s *Shaper) shapedDevice(dev string, dir Dir) (string, int, error) {
	name := dev
	switch dir {
	case DirEgress:
	case DirIngress:
		name = IFBName(dev)
	default:
		return "", 0, fmt.Errorf("sqm: %s: unknown direction %v", dev, dir)
	}
	l, err := s.links.LinkByName(name)
	if err != nil {
		return "", 0, fmt.Errorf("LinkByName(%q): %w", name, err)
	}
	return name, l.Attrs().Index, nil
}

// SetRate changes the CAKE bandwidth of one direction in place (queue and counters kept).
func (s *Shaper) SetRate(dev string, dir Dir, bps uint64) error {
	if bps == 0 {
		return fmt.Errorf("sqm: SetRate(%s %v): zero rate", dev, dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh, ok := s.shapes[dev]; ok {
		d := sh.Egress
		if dir == DirIngress {
			d = sh.Ingress
		}
		if d.MinBandwidth != 0 && (bps < d.MinBandwidth || bps > d.MaxBandwidth) {
			return fmt.Errorf("sqm: SetRate(%s %v, %d): outside [MinBandwidth %d, MaxBandwidth %d]", dev, dir, bps, d.MinBandwidth, d.MaxBandwidth)
		}
	}
	name, idx, err := s.shapedDevice(dev, dir)
	if err != nil {
		return err
	}
	root, err := s.rootQdisc(idx)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if root == nil || root.Kind != "cake" {
		return fmt.Errorf("sqm: SetRate(%s %v): no cake root qdisc on %s (Ensure first)", dev, dir, name)
	}
	return s.changeRate(name, idx, root.Handle, bps)
}

// Stats reads CAKE's statistics of one direction.
func (s *Shaper) Stats(dev string, dir Dir) (CakeStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, idx, err := s.shapedDevice(dev, dir)
	if err != nil {
		return CakeStats{}, err
	}
	root, err := s.rootQdisc(idx)
	if err != nil {
		return CakeStats{}, fmt.Errorf("%s: %w", name, err)
	}
	if root == nil || root.Kind != "cake" {
		return CakeStats{}, fmt.Errorf("sqm: Stats(%s %v): no cake root qdisc on %s", dev, dir, name)
	}
	st, _, err := ParseStats2(root.Stats2)
	if err != nil {
		return CakeStats{}, fmt.Errorf("%s: %w", name, err)
	}
	return st, nil
}

// Qdiscs lists the qdiscs of dev as the kernel dumps them (for status output and tests).
func (s *Shaper) Qdiscs(dev string) ([]Qdisc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.links.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("LinkByName(%q): %w", dev, err)
	}
	return dumpQdiscs(s.raw, l.Attrs().Index)
}
