package wg

import (
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/genetlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// KernelHasWireGuard reports whether the running kernel offers WireGuard.
//
// It asks for the "wireguard" generic-netlink family instead of creating a
// throwaway link: the lookup creates nothing, and when WireGuard is a module
// that is not loaded yet the kernel loads it on that lookup by itself (the
// module carries the genetlink family alias), which is exactly what a
// later link creation would do anyway.
func KernelHasWireGuard() bool {
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		return true
	}
	c, err := genetlink.Dial(nil)
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.GetFamily("wireguard")
	return err == nil
}

// errNoKernelWireGuard names what is missing so a person at a serial console
// knows what to change.
var errNoKernelWireGuard = errors.New(`kernel has no WireGuard: module "wireguard" is neither built in nor loadable (no /sys/module/wireguard; needs CONFIG_WIREGUARD); use mode auto or userspace`)

func createKernelLink(name string, mtu int) (netlink.Link, error) {
	if !KernelHasWireGuard() {
		return nil, fmt.Errorf("interface %s: %w", name, errNoKernelWireGuard)
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.MTU = mtu
	if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la}); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("LinkAdd(%s type wireguard): %w: %w", name, errNoKernelWireGuard, err)
		}
		return nil, fmt.Errorf("LinkAdd(%s type wireguard): %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("LinkByName(%s) after LinkAdd: %w", name, err)
	}
	return link, nil
}
