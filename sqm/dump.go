package sqm

import (
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"golang.org/x/sys/unix"
)

// TCA_* attributes of a tcmsg (include/uapi/linux/rtnetlink.h).
const (
	tcaKind    = 1
	tcaOptions = 2
	tcaStats2  = 7
)

// Qdisc is one qdisc as the kernel dumps it.
type Qdisc struct {
	Ifindex int
	Handle  uint32
	Parent  uint32
	Kind    string
	Options []byte // raw TCA_OPTIONS
	Stats2  []byte // raw TCA_STATS2
}

// Filter is one tc filter as the kernel dumps it, with the mirred target we look for.
type Filter struct {
	Ifindex  int
	Parent   uint32
	Handle   uint32
	Pref     uint16
	Protocol uint16 // host order
	Kind     string
	// RedirectTo is the ifindex of the first mirred action's target, 0 when none.
	RedirectTo int
}

const tcmsgLen = 20 // struct tcmsg: family, pad1, pad2, ifindex, handle, parent, info

func tcmsg(ifindex int, handle, parent, info uint32) []byte {
	b := make([]byte, tcmsgLen)
	nlenc.PutUint32(b[4:8], uint32(int32(ifindex)))
	nlenc.PutUint32(b[8:12], handle)
	nlenc.PutUint32(b[12:16], parent)
	nlenc.PutUint32(b[16:20], info)
	return b
}

func dumpTC(c *netlink.Conn, typ netlink.HeaderType, req []byte) ([]netlink.Message, error) {
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if err != nil {
		return nil, err
	}
	return msgs, nil
}

// dumpQdiscs lists the qdiscs of ifindex (all when 0).
func dumpQdiscs(c *netlink.Conn, ifindex int) ([]Qdisc, error) {
	msgs, err := dumpTC(c, unix.RTM_GETQDISC, tcmsg(0, 0, 0, 0))
	if err != nil {
		return nil, fmt.Errorf("RTM_GETQDISC dump: %w", err)
	}
	var out []Qdisc
	for _, m := range msgs {
		q, err := parseQdiscMsg(m.Data)
		if err != nil {
			return nil, err
		}
		if ifindex == 0 || q.Ifindex == ifindex {
			out = append(out, q)
		}
	}
	return out, nil
}

func parseQdiscMsg(b []byte) (Qdisc, error) {
	var q Qdisc
	if len(b) < tcmsgLen {
		return q, fmt.Errorf("RTM_NEWQDISC: %d bytes, shorter than tcmsg", len(b))
	}
	q.Ifindex = int(int32(nlenc.Uint32(b[4:8])))
	q.Handle = nlenc.Uint32(b[8:12])
	q.Parent = nlenc.Uint32(b[12:16])
	ad, err := netlink.NewAttributeDecoder(b[tcmsgLen:])
	if err != nil {
		return q, fmt.Errorf("RTM_NEWQDISC ifindex %d: %w", q.Ifindex, err)
	}
	for ad.Next() {
		switch ad.Type() {
		case tcaKind:
			q.Kind = ad.String()
		case tcaOptions:
			q.Options = append([]byte(nil), ad.Bytes()...)
		case tcaStats2:
			q.Stats2 = append([]byte(nil), ad.Bytes()...)
		}
	}
	if err := ad.Err(); err != nil {
		return q, fmt.Errorf("RTM_NEWQDISC ifindex %d: %w", q.Ifindex, err)
	}
	return q, nil
}

// Filter option attributes that carry the action list: TCA_U32_ACT, TCA_MATCHALL_ACT, TCA_BPF_ACT.
var filterActAttr = map[string]uint16{"u32": 7, "matchall": 2, "bpf": 1}

const (
	tcaActKind    = 1
	tcaActOptions = 2
	tcaMirredParm = 2
)

// dumpFilters lists the filters of ifindex under parent.
func dumpFilters(c *netlink.Conn, ifindex int, parent uint32) ([]Filter, error) {
	msgs, err := dumpTC(c, unix.RTM_GETTFILTER, tcmsg(ifindex, 0, parent, 0))
	if err != nil {
		return nil, fmt.Errorf("RTM_GETTFILTER dump ifindex %d parent %#x: %w", ifindex, parent, err)
	}
	var out []Filter
	for _, m := range msgs {
		f, err := parseFilterMsg(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func parseFilterMsg(b []byte) (Filter, error) {
	var f Filter
	if len(b) < tcmsgLen {
		return f, fmt.Errorf("RTM_NEWTFILTER: %d bytes, shorter than tcmsg", len(b))
	}
	f.Ifindex = int(int32(nlenc.Uint32(b[4:8])))
	f.Handle = nlenc.Uint32(b[8:12])
	f.Parent = nlenc.Uint32(b[12:16])
	info := nlenc.Uint32(b[16:20])
	f.Pref = uint16(info >> 16)
	f.Protocol = uint16(info)>>8 | uint16(info)<<8 // network order in tcm_info
	ad, err := netlink.NewAttributeDecoder(b[tcmsgLen:])
	if err != nil {
		return f, fmt.Errorf("RTM_NEWTFILTER: %w", err)
	}
	var opts []byte
	for ad.Next() {
		switch ad.Type() {
		case tcaKind:
			f.Kind = ad.String()
		case tcaOptions:
			opts = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return f, fmt.Errorf("RTM_NEWTFILTER: %w", err)
	}
	if at, ok := filterActAttr[f.Kind]; ok && len(opts) > 0 {
		f.RedirectTo = mirredTarget(opts, at)
	}
	return f, nil
}

// mirredTarget digs TCA_*_ACT → action nest → TCA_ACT_OPTIONS → TCA_MIRRED_PARMS.ifindex.
func mirredTarget(opts []byte, actAttr uint16) int {
	target := 0
	ad, err := netlink.NewAttributeDecoder(opts)
	if err != nil {
		return 0
	}
	for ad.Next() {
		if ad.Type() != actAttr {
			continue
		}
		ad.Nested(func(acts *netlink.AttributeDecoder) error {
			for acts.Next() {
				acts.Nested(func(act *netlink.AttributeDecoder) error {
					var kind string
					var aopts []byte
					for act.Next() {
						switch act.Type() {
						case tcaActKind:
							kind = act.String()
						case tcaActOptions:
							aopts = act.Bytes()
						}
					}
					if kind != "mirred" || target != 0 {
						return nil
					}
					mad, err := netlink.NewAttributeDecoder(aopts)
					if err != nil {
						return nil
					}
					for mad.Next() {
						// struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex
						if v := mad.Bytes(); mad.Type() == tcaMirredParm && len(v) >= 28 {
							target = int(int32(nlenc.Uint32(v[24:28])))
						}
					}
					return nil
				})
			}
			return nil
		})
	}
	return target
}
