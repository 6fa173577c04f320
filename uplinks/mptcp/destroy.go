package mptcp

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const sockDestroy = 21 // SOCK_DESTROY (include/uapi/linux/sock_diag.h)

// DestroySubflows aborts every MPTCP subflow whose peer address is remote
// (SOCK_DESTROY, which needs CONFIG_INET_DIAG_DESTROY). The connection
// itself survives on its other subflows.
//
// The concentrator uses it on a path the router reports dead: the kernel
// sends MP_PRIO only on the first active subflow from an address
// (mptcp_pm_nl_mp_prio_send_ack returns after one), and while the dead
// path's subflow is first in the list the fresh DATA_ACK would go down the
// dead path.
func (c *Client) DestroySubflows(remote netip.Addr) (int, error) {
	sfs, err := c.Subflows()
	if err != nil {
		return 0, err
	}
	c.diagMu.Lock()
	defer c.diagMu.Unlock()
	n := 0
	for _, sf := range sfs {
		if sf.Remote.Addr() != remote {
			continue
		}
		_, err := c.diag.Execute(netlink.Message{
			Header: netlink.Header{Type: sockDestroy, Flags: netlink.Request | netlink.Acknowledge},
			Data:   destroyRequest(sf),
		})
		if err != nil {
			return n, fmt.Errorf("mptcp: SOCK_DESTROY(%v→%v): %w", sf.Local, sf.Remote, err)
		}
		n++
	}
	return n, nil
}

// destroyRequest is a struct inet_diag_req_v2 naming one TCP socket by its
// four-tuple (ports and addresses big-endian, no cookie).
func destroyRequest(sf Subflow) []byte {
	b := make([]byte, sizeofInetDiagReqV2)
	b[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:8], ^uint32(0))
	binary.BigEndian.PutUint16(b[8:10], sf.Local.Port())
	binary.BigEndian.PutUint16(b[10:12], sf.Remote.Port())
	if sf.Local.Addr().Is4() {
		b[0] = unix.AF_INET
		a, r := sf.Local.Addr().As4(), sf.Remote.Addr().As4()
		copy(b[12:16], a[:])
		copy(b[28:32], r[:])
	} else {
		b[0] = unix.AF_INET6
		a, r := sf.Local.Addr().As16(), sf.Remote.Addr().As16()
		copy(b[12:28], a[:])
		copy(b[28:44], r[:])
	}
	binary.NativeEndian.PutUint32(b[48:52], ^uint32(0)) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(b[52:56], ^uint32(0))
	return b
}
