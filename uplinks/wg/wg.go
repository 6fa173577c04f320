// Package wg brings up one WireGuard interface per uplink, on the kernel's
// WireGuard when the kernel has it and on an in-process wireguard-go device
// when it does not (the development host's kernel has none, some appliance
// kernels may lack it too).
//
// It exists so that the supervisor and the concentrator apply a tunnel the
// same way on every kernel: one idempotent Ensure that creates or adopts the
// link and then changes only what differs, so that re-applying a config (or a
// restarted supervisor adopting a kernel link) never resets a running
// handshake, and so that each tunnel carries its own fwmark, which is how its
// encrypted UDP is policy-routed out of its own uplink.
//
// A Manager acts in the network namespace of its process. wireguard-go opens
// sockets and the TUN from many goroutines and OS threads, so it must not be
// pointed at another namespace with setns on one thread: run the whole
// process in the namespace instead (ip netns exec), as the tests do.
package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Mode selects the WireGuard implementation for new interfaces.
type Mode int

const (
	// ModeAuto uses the kernel's WireGuard when KernelHasWireGuard, and
	// wireguard-go otherwise.
	ModeAuto Mode = iota
	// ModeKernel requires the kernel's WireGuard and fails clearly without it.
	ModeKernel
	// ModeUserspace always uses an in-process wireguard-go device.
	ModeUserspace
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeKernel:
		return "kernel"
	case ModeUserspace:
		return "userspace"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// DefaultMTU leaves room for the WireGuard overhead (80 bytes over IPv6)
// inside a 1500-byte uplink, as wg-quick does.
const DefaultMTU = 1420

// Peer is one remote end of a tunnel.
type Peer struct {
	PublicKey wgtypes.Key
	// Endpoint is nil on the side that waits to be contacted (the
	// concentrator); the peer's roamed endpoint is then left alone.
	Endpoint   *net.UDPAddr
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval, 0 for none.
	Keepalive time.Duration
}

// Config is the desired state of one WireGuard interface.
type Config struct {
	Name       string
	PrivateKey wgtypes.Key
	// ListenPort 0 lets the kernel pick a port on creation and accepts any
	// port on an existing interface.
	ListenPort int
	// FwMark marks the tunnel's encrypted UDP so that `ip rule fwmark`
	// can route it out of its uplink; 0 for none.
	FwMark    int
	Addresses []netip.Prefix
	// MTU of the tunnel interface, DefaultMTU when 0.
	MTU   int
	Peers []Peer
}

// Validate checks cfg without touching the system; errors name the field.
func (cfg *Config) Validate() error {
	if err := validName(cfg.Name); err != nil {
		return fmt.Errorf("Config.Name: %w", err)
	}
	if cfg.PrivateKey == (wgtypes.Key{}) {
		return fmt.Errorf("interface %s: Config.PrivateKey: zero key", cfg.Name)
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		return fmt.Errorf("interface %s: Config.ListenPort %d: out of range 0..65535", cfg.Name, cfg.ListenPort)
	}
	if cfg.FwMark < 0 || int64(cfg.FwMark) > 0xffffffff {
		return fmt.Errorf("interface %s: Config.FwMark %d: out of range 0..0xffffffff", cfg.Name, cfg.FwMark)
	}
	// 1280 is the IPv6 minimum; the tunnel must be able to carry IPv6.
	if cfg.MTU != 0 && (cfg.MTU < 1280 || cfg.MTU > 65535) {
		return fmt.Errorf("interface %s: Config.MTU %d: out of range 1280..65535", cfg.Name, cfg.MTU)
	}
	for i, a := range cfg.Addresses {
		if !a.IsValid() {
			return fmt.Errorf("interface %s: Config.Addresses[%d]: invalid prefix", cfg.Name, i)
		}
		if slices.Contains(cfg.Addresses[:i], a) {
			return fmt.Errorf("interface %s: Config.Addresses[%d] %v: duplicate", cfg.Name, i, a)
		}
	}
	seen := map[wgtypes.Key]int{}
	for i, p := range cfg.Peers {
		if p.PublicKey == (wgtypes.Key{}) {
			return fmt.Errorf("interface %s: Config.Peers[%d].PublicKey: zero key", cfg.Name, i)
		}
		if p.PublicKey == cfg.PrivateKey.PublicKey() {
			return fmt.Errorf("interface %s: Config.Peers[%d].PublicKey %s: is this interface's own key", cfg.Name, i, p.PublicKey)
		}
		if j, dup := seen[p.PublicKey]; dup {
			return fmt.Errorf("interface %s: Config.Peers[%d].PublicKey %s: duplicate of Peers[%d]", cfg.Name, i, p.PublicKey, j)
		}
		seen[p.PublicKey] = i
		if p.Endpoint != nil {
			if p.Endpoint.IP == nil || p.Endpoint.IP.IsUnspecified() || p.Endpoint.Port <= 0 || p.Endpoint.Port > 65535 {
				return fmt.Errorf("interface %s: Config.Peers[%d].Endpoint %v: need a specific address and a port 1..65535", cfg.Name, i, p.Endpoint)
			}
		}
		for j, a := range p.AllowedIPs {
			if !a.IsValid() {
				return fmt.Errorf("interface %s: Config.Peers[%d].AllowedIPs[%d]: invalid prefix", cfg.Name, i, j)
			}
		}
		// The wire format counts whole seconds in 16 bits.
		if p.Keepalive < 0 || p.Keepalive%time.Second != 0 || p.Keepalive > 65535*time.Second {
			return fmt.Errorf("interface %s: Config.Peers[%d].Keepalive %v: need whole seconds 0..65535", cfg.Name, i, p.Keepalive)
		}
	}
	return nil
}

func validName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	// IFNAMSIZ is 16 including the NUL.
	if len(name) > 15 {
		return fmt.Errorf("%q: longer than 15 bytes", name)
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%q: not a valid interface name", name)
	}
	return nil
}

// Manager creates, adopts and removes WireGuard interfaces in its process's
// network namespace. Its methods are safe for concurrent use.
type Manager struct {
	log  *slog.Logger
	mode Mode

	mu sync.Mutex
	// user holds the wireguard-go devices this process runs; they die
	// with it.
	user map[string]*userDevice
	wgc  *wgctrl.Client
	// wgcKernel records whether wgc was opened while the kernel's
	// WireGuard family existed; wgctrl only looks once.
	wgcKernel bool
	// endpoints remembers, per interface, the peer endpoints last applied,
	// to tell a roamed peer from a changed config.
	endpoints map[string]map[wgtypes.Key]string
	// kernelOK caches the ModeAuto probe.
	kernelOK *bool
}

// NewManager returns a Manager that creates new interfaces in mode; existing
// kernel WireGuard links are adopted in any mode but ModeUserspace.
func NewManager(log *slog.Logger, mode Mode) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{log: log, mode: mode, user: map[string]*userDevice{}, endpoints: map[string]map[wgtypes.Key]string{}}
}

// client returns the wgctrl client, reopening it if the kernel's WireGuard
// became available after it was opened.
func (m *Manager) client(needKernel bool) (*wgctrl.Client, error) {
	if m.wgc != nil && (!needKernel || m.wgcKernel) {
		return m.wgc, nil
	}
	if m.wgc != nil {
		m.wgc.Close()
		m.wgc = nil
	}
	kernel := KernelHasWireGuard()
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wgctrl.New: %w", err)
	}
	m.wgc, m.wgcKernel = c, kernel
	return c, nil
}

func (m *Manager) useKernel() bool {
	switch m.mode {
	case ModeKernel:
		return true
	case ModeUserspace:
		return false
	}
	if m.kernelOK == nil {
		ok := KernelHasWireGuard()
		m.kernelOK = &ok
		m.log.Info("WireGuard implementation chosen", "kernel", ok)
	}
	return *m.kernelOK
}

// Ensure makes the interface cfg.Name match cfg: it creates the link or
// adopts an existing one, then changes only what differs, so applying the
// same config again keeps the ifindex and the running handshakes.
func (m *Manager) Ensure(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	link, kernel, created, err := m.ensureLink(&cfg)
	if err != nil {
		return err
	}
	if err := m.configure(&cfg, link, kernel); err != nil {
		if created {
			// Leave nothing half-applied behind: a link that never
			// got its config would otherwise be adopted as is.
			if rerr := m.removeLocked(cfg.Name); rerr != nil {
				m.log.Warn("removing half-configured interface", "interface", cfg.Name, "err", rerr)
			}
		}
		return err
	}
	return nil
}

// configure applies cfg to an existing link.
func (m *Manager) configure(cfg *Config, link netlink.Link, kernel bool) error {
	c, err := m.client(kernel)
	if err != nil {
		return err
	}
	dev, err := c.Device(cfg.Name)
	if err != nil {
		return fmt.Errorf("wgctrl Device(%s): %w", cfg.Name, err)
	}
	if wc, changed := diffDevice(dev, cfg, m.endpoints[cfg.Name]); changed {
		if err := c.ConfigureDevice(cfg.Name, wc); err != nil {
			return fmt.Errorf("wgctrl ConfigureDevice(%s: %s): %w", cfg.Name, describe(wc), explainErrno(err))
		}
		m.log.Info("WireGuard device configured", "interface", cfg.Name, "change", describe(wc))
	}
	applied := map[wgtypes.Key]string{}
	for _, p := range cfg.Peers {
		if p.Endpoint != nil {
			applied[p.PublicKey] = p.Endpoint.String()
		}
	}
	m.endpoints[cfg.Name] = applied
	if err := m.ensureAddresses(link, cfg.Addresses); err != nil {
		return err
	}
	if link.Attrs().MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("LinkSetMTU(%s, %d): %w", cfg.Name, cfg.MTU, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("LinkSetUp(%s): %w", cfg.Name, err)
		}
	}
	if u := m.user[cfg.Name]; u != nil {
		// wireguard-go follows the TUN's up/down events on its own, but
		// asynchronously and only logging a failure; bringing it up here
		// returns that failure (say, a port taken while it was down).
		if err := u.dev.Up(); err != nil {
			return fmt.Errorf("wireguard-go Up(%s) on port %d: %w", cfg.Name, cfg.ListenPort, err)
		}
		// When its own, asynchronous reaction to the TUN's up event got
		// there first and failed to bind, wireguard-go resets the port to
		// 0, and the Up above then succeeds on a random port: the
		// configured port must be checked, not assumed.
		if cfg.ListenPort != 0 {
			d, err := c.Device(cfg.Name)
			if err != nil {
				return fmt.Errorf("wgctrl Device(%s): %w", cfg.Name, err)
			}
			if d.ListenPort != cfg.ListenPort {
				return fmt.Errorf("wireguard-go Up(%s) on port %d: it listens on %d instead, the port is taken: %w", cfg.Name, cfg.ListenPort, d.ListenPort, syscall.EADDRINUSE)
			}
		}
	}
	return nil
}

// ensureLink finds or creates the link; kernel reports whether it is a kernel
// WireGuard link.
func (m *Manager) ensureLink(cfg *Config) (link netlink.Link, kernel, created bool, err error) {
	if u := m.user[cfg.Name]; u != nil {
		link, err = netlink.LinkByName(cfg.Name)
		if err == nil && u.alive() && link.Attrs().Index == u.ifindex {
			if err := u.ensureUAPI(m.log); err != nil {
				return nil, false, false, err
			}
			return link, false, false, nil
		}
		// Someone deleted our TUN, or the device died: start afresh.
		m.log.Warn("userspace WireGuard device lost its link, recreating", "interface", cfg.Name)
		u.close()
		delete(m.user, cfg.Name)
	}
	link, err = netlink.LinkByName(cfg.Name)
	if err == nil {
		switch t := link.Type(); {
		case t == "wireguard":
			if m.mode == ModeUserspace {
				return nil, false, false, fmt.Errorf("interface %s: is a kernel WireGuard link but mode is userspace; delete it or use mode auto", cfg.Name)
			}
			m.log.Info("adopting kernel WireGuard link", "interface", cfg.Name, "ifindex", link.Attrs().Index)
			return link, true, false, nil
		case t == "tuntap" || t == "tun":
			return nil, false, false, fmt.Errorf("interface %s: is a TUN device held by another process (another wireguard-go?); not adopting it", cfg.Name)
		default:
			return nil, false, false, fmt.Errorf("interface %s: exists with link type %q, not wireguard", cfg.Name, t)
		}
	}
	var notFound netlink.LinkNotFoundError
	if !errors.As(err, &notFound) {
		return nil, false, false, fmt.Errorf("LinkByName(%s): %w", cfg.Name, err)
	}
	if m.useKernel() {
		link, err = createKernelLink(cfg.Name, cfg.MTU)
		if err != nil {
			return nil, false, false, err
		}
		m.log.Info("created kernel WireGuard link", "interface", cfg.Name, "ifindex", link.Attrs().Index)
		return link, true, true, nil
	}
	u, err := newUserDevice(m.log, cfg.Name, cfg.MTU)
	if err != nil {
		return nil, false, false, err
	}
	link, err = netlink.LinkByIndex(u.ifindex)
	if err != nil {
		u.close()
		return nil, false, false, fmt.Errorf("LinkByIndex(%d) for new TUN %s: %w", u.ifindex, cfg.Name, err)
	}
	m.user[cfg.Name] = u
	m.log.Info("created userspace WireGuard device", "interface", cfg.Name, "ifindex", u.ifindex)
	return link, false, true, nil
}

// ensureAddresses adds the missing addresses and removes the others, except
// IPv6 link-local ones the kernel may have generated itself.
func (m *Manager) ensureAddresses(link netlink.Link, want []netip.Prefix) error {
	name := link.Attrs().Name
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("AddrList(%s): %w", name, err)
	}
	present := map[netip.Prefix]bool{}
	for _, a := range have {
		p, ok := ipNetPrefix(a.IPNet)
		if !ok {
			continue
		}
		present[p] = true
		if slices.Contains(want, p) || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("AddrDel(%s, %v): %w", name, p, err)
		}
		m.log.Info("removed stray address", "interface", name, "address", p)
	}
	for _, p := range want {
		if present[p] {
			continue
		}
		a := &netlink.Addr{IPNet: prefixIPNet(p)}
		if err := netlink.AddrReplace(link, a); err != nil {
			return fmt.Errorf("AddrReplace(%s, %v): %w", name, p, err)
		}
	}
	return nil
}

// Remove deletes the interface: the kernel link, or this process's
// wireguard-go device with its TUN and UAPI socket. Removing an interface
// that does not exist is not an error.
func (m *Manager) Remove(name string) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("Remove: name: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removeLocked(name)
}

func (m *Manager) removeLocked(name string) error {
	delete(m.endpoints, name)
	if u := m.user[name]; u != nil {
		delete(m.user, name)
		return u.close()
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("LinkByName(%s): %w", name, err)
	}
	if t := link.Type(); t != "wireguard" {
		return fmt.Errorf("Remove(%s): link type %q is not a WireGuard link of this process", name, t)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("LinkDel(%s): %w", name, err)
	}
	return nil
}

// Device returns the interface's WireGuard state (keys, peers, handshakes,
// counters) as wg(8) sees it.
func (m *Manager) Device(name string) (*wgtypes.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, isUser := m.user[name]
	c, err := m.client(!isUser)
	if err != nil {
		return nil, err
	}
	d, err := c.Device(name)
	if err != nil {
		return nil, fmt.Errorf("wgctrl Device(%s): %w", name, err)
	}
	return d, nil
}

// Mode reports "kernel" or "userspace" for a WireGuard interface in this
// namespace, "" when there is none by that name.
func (m *Manager) Mode(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.user[name]; ok {
		return "userspace"
	}
	if link, err := netlink.LinkByName(name); err == nil && link.Type() == "wireguard" {
		return "kernel"
	}
	return ""
}

// Close stops this process's wireguard-go devices (their TUN links and UAPI
// sockets vanish). Kernel links stay, for a restarted supervisor to adopt.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for name, u := range m.user {
		errs = append(errs, u.close())
		delete(m.user, name)
		delete(m.endpoints, name)
	}
	if m.wgc != nil {
		errs = append(errs, m.wgc.Close())
		m.wgc = nil
	}
	return errors.Join(errs...)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		// A 4-byte address with a 16-byte mask or the like.
		if bits == 128 && a.Is4() && ones >= 96 {
			ones -= 96
		} else {
			return netip.Prefix{}, false
		}
	}
	return netip.PrefixFrom(a, ones), true
}

// wgctrl reports a userspace device's failures as the bare "errno=-98" of
// the UAPI protocol; a person needs "address already in use".
var uapiErrno = regexp.MustCompile(`errno=-?([0-9]+)`)

func explainErrno(err error) error {
	if m := uapiErrno.FindStringSubmatch(err.Error()); m != nil {
		if n, perr := strconv.Atoi(m[1]); perr == nil && n > 0 {
			return fmt.Errorf("%w (%v)", err, syscall.Errno(n))
		}
	}
	return err
}

// isNotExist is true for "no such file" from the UAPI directory.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
