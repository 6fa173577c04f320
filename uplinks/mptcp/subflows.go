package mptcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Values from include/uapi/linux/inet_diag.h and mptcp.h that x/sys/unix
// does not carry.
const (
	inetDiagInfo    = 2  // INET_DIAG_INFO: also gates the "aux" data carrying ULP info
	inetDiagULPInfo = 19 // INET_DIAG_ULP_INFO

	ulpInfoName  = 1 // INET_ULP_INFO_NAME
	ulpInfoMPTCP = 3 // INET_ULP_INFO_MPTCP

	subflowAttrTokenRem = 1
	subflowAttrTokenLoc = 2
	subflowAttrFlags    = 8
	subflowAttrIDRem    = 9
	subflowAttrIDLoc    = 10

	subflowFlagBkupRem = 1 << 4 // the peer marked the subflow backup (MP_JOIN/MP_PRIO B bit)
	subflowFlagBkupLoc = 1 << 5 // we marked it backup (our endpoint has FlagBackup)
	subflowFlagFullyEs = 1 << 6

	sizeofInetDiagReqV2 = 56
	sizeofInetDiagMsg   = 72
)

// TCPState is a TCP socket state as in include/net/tcp_states.h.
type TCPState uint8

var tcpStateNames = [...]string{
	1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
	6: "TIME-WAIT", 7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN",
	11: "CLOSING", 12: "NEW-SYN-RECV",
}

// String names the state as ss(8) does.
func (s TCPState) String() string {
	if int(s) < len(tcpStateNames) && tcpStateNames[s] != "" {
		return tcpStateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// StateEstablished is TCP_ESTABLISHED.
const StateEstablished TCPState = 1

// Subflow is a TCP socket of this namespace that carries an MPTCP subflow.
type Subflow struct {
	Local, Remote netip.AddrPort
	// Backup is set when either end marked the subflow backup; the kernel's
	// scheduler (6.10+) looks at both, so this is what decides whether data
	// goes there while a non-backup subflow is usable.
	Backup       bool
	BackupLocal  bool // our endpoint asked for backup (MPTCP_SUBFLOW_FLAG_BKUP_LOC)
	BackupRemote bool // the peer asked for backup (MPTCP_SUBFLOW_FLAG_BKUP_REM)
	// FullyEstablished is the MPTCP handshake's end for this subflow.
	FullyEstablished bool
	// Token is the local token of the MPTCP connection: subflows with the
	// same Token belong to the same connection.
	Token       uint32
	RemoteToken uint32
	LocalID     uint8 // endpoint id the subflow uses here (0: initial subflow)
	RemoteID    uint8
	IfIndex     int // bound device, 0 if none
	State       TCPState
}

// Subflows lists the MPTCP subflows of all TCP sockets in the client's
// namespace (both ends, if both live here), via NETLINK_SOCK_DIAG. The
// kernel reports subflow details only to CAP_NET_ADMIN.
//
// Cost: the kernel walks the whole TCP established hash once per address
// family. A namespace sharing the host's table (the default: the sysctl
// net.ipv4.tcp_ehash_entries reads negative in it) pays for the host's size:
// ~7 ms with 256 Ki buckets here, ~1 ms with a per-namespace table of 1024
// (net.ipv4.tcp_child_ehash_entries set in the creating namespace). Fine for
// a metrics scrape, too slow for a failure detector's hot loop.
func (c *Client) Subflows() ([]Subflow, error) {
	c.diagMu.Lock()
	defer c.diagMu.Unlock()
	if c.diag == nil {
		return nil, c.diagErr
	}
	var out []Subflow
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := c.diag.Execute(netlink.Message{
			Header: netlink.Header{
				Type:  unix.SOCK_DIAG_BY_FAMILY,
				Flags: netlink.Request | netlink.Dump,
			},
			Data: diagRequest(fam),
		})
		if err != nil {
			// A kernel without IPv6 has no AF_INET6 handler.
			if fam == unix.AF_INET6 && errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("mptcp: SOCK_DIAG_BY_FAMILY(tcp, family %d): %w", fam, err)
		}
		for _, m := range msgs {
			sf, ok, err := parseSubflow(m.Data)
			if err != nil {
				return nil, fmt.Errorf("mptcp: SOCK_DIAG_BY_FAMILY(tcp, family %d): %w", fam, err)
			}
			if ok {
				out = append(out, sf)
			}
		}
	}
	return out, nil
}

// diagRequest builds a struct inet_diag_req_v2 for all non-listening TCP
// sockets of the family, asking for INET_DIAG_INFO: the ULP info is only
// emitted together with it.
func diagRequest(family uint8) []byte {
	b := make([]byte, sizeofInetDiagReqV2)
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	b[2] = 1 << (inetDiagInfo - 1)
	const tcpListen = 10
	binary.NativeEndian.PutUint32(b[4:8], ^uint32(0)&^(1<<tcpListen))
	return b
}

// parseSubflow decodes one struct inet_diag_msg and its attributes; ok is
// false for TCP sockets that are not MPTCP subflows.
func parseSubflow(b []byte) (sf Subflow, ok bool, err error) {
	if len(b) < sizeofInetDiagMsg {
		return Subflow{}, false, fmt.Errorf("inet_diag_msg: %d bytes, want at least %d", len(b), sizeofInetDiagMsg)
	}
	family := b[0]
	sf.State = TCPState(b[1])
	// struct inet_diag_sockid starts at offset 4: ports are big-endian.
	sport := binary.BigEndian.Uint16(b[4:6])
	dport := binary.BigEndian.Uint16(b[6:8])
	var src, dst netip.Addr
	switch family {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(b[8:12]))
		dst = netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		dst = netip.AddrFrom16([16]byte(b[24:40])).Unmap()
	default:
		return Subflow{}, false, fmt.Errorf("inet_diag_msg: unknown family %d", family)
	}
	sf.Local = netip.AddrPortFrom(src, sport)
	sf.Remote = netip.AddrPortFrom(dst, dport)
	sf.IfIndex = int(binary.NativeEndian.Uint32(b[40:44]))

	ad, err := netlink.NewAttributeDecoder(b[sizeofInetDiagMsg:])
	if err != nil {
		return Subflow{}, false, fmt.Errorf("inet_diag_msg %v: %w", sf.Local, err)
	}
	var isMPTCP, hasInfo bool
	for ad.Next() {
		if ad.Type() != inetDiagULPInfo {
			continue
		}
		ad.Nested(func(ud *netlink.AttributeDecoder) error {
			for ud.Next() {
				switch ud.Type() {
				case ulpInfoName:
					isMPTCP = ud.String() == "mptcp"
				case ulpInfoMPTCP:
					hasInfo = true
					ud.Nested(func(md *netlink.AttributeDecoder) error {
						for md.Next() {
							switch md.Type() {
							case subflowAttrTokenRem:
								sf.RemoteToken = md.Uint32()
							case subflowAttrTokenLoc:
								sf.Token = md.Uint32()
							case subflowAttrFlags:
								f := md.Uint32()
								sf.BackupRemote = f&subflowFlagBkupRem != 0
								sf.BackupLocal = f&subflowFlagBkupLoc != 0
								sf.FullyEstablished = f&subflowFlagFullyEs != 0
							case subflowAttrIDRem:
								sf.RemoteID = md.Uint8()
							case subflowAttrIDLoc:
								sf.LocalID = md.Uint8()
							}
						}
						return nil
					})
				}
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return Subflow{}, false, fmt.Errorf("inet_diag_msg %v: %w", sf.Local, err)
	}
	// The MPTCP part is absent for listeners and, before the subflow context
	// exists, for sockets in the middle of their handshake: not subflows yet.
	if !isMPTCP || !hasInfo {
		return Subflow{}, false, nil
	}
	sf.Backup = sf.BackupLocal || sf.BackupRemote
	return sf, true, nil
}
