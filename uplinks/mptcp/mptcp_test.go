package mptcp

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestFlagsString(t *testing.T) {
	for _, tc := range []struct {
		f    Flags
		want string
	}{
		{0, "none"},
		{FlagSubflow | FlagBackup, "subflow backup"},
		{FlagSignal | FlagSubflow | FlagBackup | FlagFullmesh | FlagImplicit, "signal subflow backup fullmesh implicit"},
		{FlagSignal | 0x40, "signal 0x40"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint32(tc.f), got, tc.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for in, want := range map[string]Flags{
		"":                      0,
		"none":                  0,
		"subflow backup":        FlagSubflow | FlagBackup,
		"signal,fullmesh":       FlagSignal | FlagFullmesh,
		" subflow \t implicit ": FlagSubflow | FlagImplicit,
	} {
		got, err := ParseFlags(in)
		if err != nil || got != want {
			t.Errorf("ParseFlags(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for f := Flags(0); f < 32; f++ {
		if got, err := ParseFlags(f.String()); err != nil || got != f {
			t.Errorf("ParseFlags(%q) = %v, %v; want round trip", f.String(), got, err)
		}
	}
	if _, err := ParseFlags("subflow bakup"); err == nil || !strings.Contains(err.Error(), `"bakup"`) {
		t.Errorf("ParseFlags(typo) = %v, want an error naming the word", err)
	}
}

func TestEndpointString(t *testing.T) {
	e := Endpoint{ID: 7, Addr: netip.MustParseAddr("10.0.0.2"), Port: 4000, Flags: FlagSignal, IfIndex: 3}
	if got, want := e.String(), "10.0.0.2 port 4000 id 7 signal ifindex 3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (Endpoint{}).String(); !strings.Contains(got, "no addr") {
		t.Errorf("zero Endpoint String() = %q", got)
	}
}

func TestEncodeDecodeEndpoint(t *testing.T) {
	for _, e := range []Endpoint{
		{ID: 1, Addr: netip.MustParseAddr("192.0.2.1"), Flags: FlagSubflow | FlagBackup, IfIndex: 12},
		{ID: 255, Addr: netip.MustParseAddr("2001:db8::1"), Port: 65535, Flags: FlagSignal},
		{ID: 3, Addr: netip.MustParseAddr("::ffff:198.51.100.7"), Flags: FlagSubflow},
	} {
		ae := netlink.NewAttributeEncoder()
		encodeAddr(ae, e, true, true)
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeEndpoint(b)
		if err != nil {
			t.Fatalf("decode(encode(%v)): %v", e, err)
		}
		want := e
		want.Addr = e.Addr.Unmap()
		if got != want {
			t.Errorf("decode(encode(%v)) = %v", e, got)
		}
	}
}

// TestDecodeKernelLayout decodes a reply laid out as mptcp_nl_fill_addr
// writes it (network-order address, host-order port), independent of
// encodeAddr.
func TestDecodeKernelLayout(t *testing.T) {
	inner, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: addrAttrFamily, Data: binary.NativeEndian.AppendUint16(nil, unix.AF_INET)},
		{Type: addrAttrID, Data: []byte{9}},
		{Type: addrAttrFlags, Data: binary.NativeEndian.AppendUint32(nil, 6)},
		{Type: addrAttrIfIdx, Data: binary.NativeEndian.AppendUint32(nil, 4)},
		{Type: addrAttrAddr4, Data: []byte{10, 1, 2, 3}},
		{Type: addrAttrPort, Data: binary.NativeEndian.AppendUint16(nil, 8080)},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: attrAddr | unix.NLA_F_NESTED, Data: inner}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeEndpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Endpoint{ID: 9, Addr: netip.MustParseAddr("10.1.2.3"), Port: 8080, Flags: FlagSubflow | FlagBackup, IfIndex: 4}
	if got != want {
		t.Errorf("decoded %v, want %v", got, want)
	}
}

func TestDecodeEndpointBad(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"truncated": {8, 0, 1},
		"no family": mustAttrs(t, netlink.Attribute{Type: attrAddr, Data: mustAttrs(t, netlink.Attribute{Type: addrAttrAddr4, Data: []byte{1, 2, 3, 4}})}),
		"short v6": mustAttrs(t, netlink.Attribute{Type: attrAddr, Data: mustAttrs(t,
			netlink.Attribute{Type: addrAttrFamily, Data: binary.NativeEndian.AppendUint16(nil, unix.AF_INET6)},
			netlink.Attribute{Type: addrAttrAddr6, Data: []byte{1, 2, 3, 4}})}),
	} {
		if e, err := decodeEndpoint(b); err == nil {
			t.Errorf("%s: decoded %v, want an error", name, e)
		}
	}
}

func mustAttrs(t testing.TB, attrs ...netlink.Attribute) []byte {
	t.Helper()
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diagMsg builds a struct inet_diag_msg followed by attrs.
func diagMsg(t testing.TB, family uint8, src, dst netip.AddrPort, state TCPState, attrs ...netlink.Attribute) []byte {
	b := make([]byte, sizeofInetDiagMsg)
	b[0], b[1] = family, uint8(state)
	binary.BigEndian.PutUint16(b[4:], src.Port())
	binary.BigEndian.PutUint16(b[6:], dst.Port())
	if family == unix.AF_INET {
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
	}
	binary.NativeEndian.PutUint32(b[40:], 5)
	if len(attrs) > 0 {
		b = append(b, mustAttrs(t, attrs...)...)
	}
	return b
}

func ulpAttr(t testing.TB, name string, flags uint32) netlink.Attribute {
	mp := mustAttrs(t,
		netlink.Attribute{Type: subflowAttrTokenRem, Data: binary.NativeEndian.AppendUint32(nil, 0xbbbb)},
		netlink.Attribute{Type: subflowAttrTokenLoc, Data: binary.NativeEndian.AppendUint32(nil, 0xaaaa)},
		netlink.Attribute{Type: 4, Data: make([]byte, 8)}, // MAP_SEQ u64, ignored
		netlink.Attribute{Type: subflowAttrFlags, Data: binary.NativeEndian.AppendUint32(nil, flags)},
		netlink.Attribute{Type: subflowAttrIDRem, Data: []byte{2}},
		netlink.Attribute{Type: subflowAttrIDLoc, Data: []byte{3}},
	)
	return netlink.Attribute{Type: inetDiagULPInfo, Data: mustAttrs(t,
		netlink.Attribute{Type: ulpInfoName, Data: append([]byte(name), 0)},
		netlink.Attribute{Type: ulpInfoMPTCP, Data: mp},
	)}
}

func TestParseSubflow(t *testing.T) {
	src := netip.MustParseAddrPort("10.0.0.1:1234")
	dst := netip.MustParseAddrPort("10.0.0.2:443")
	tcpInfo := netlink.Attribute{Type: inetDiagInfo, Data: make([]byte, 232)}

	sf, ok, err := parseSubflow(diagMsg(t, unix.AF_INET, src, dst, StateEstablished, tcpInfo, ulpAttr(t, "mptcp", subflowFlagBkupLoc|subflowFlagFullyEs)))
	if err != nil || !ok {
		t.Fatalf("parseSubflow = %v, %v", ok, err)
	}
	want := Subflow{Local: src, Remote: dst, Backup: true, BackupLocal: true, FullyEstablished: true,
		Token: 0xaaaa, RemoteToken: 0xbbbb, LocalID: 3, RemoteID: 2, IfIndex: 5, State: StateEstablished}
	if sf != want {
		t.Errorf("parseSubflow = %+v\nwant %+v", sf, want)
	}

	// IPv4 peers of a dual-stack socket arrive v4-mapped.
	m6 := netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
	d6 := netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	sf, ok, err = parseSubflow(diagMsg(t, unix.AF_INET6, m6, d6, StateEstablished, ulpAttr(t, "mptcp", subflowFlagBkupRem)))
	if err != nil || !ok || sf.Local != src || sf.Remote != dst || !sf.Backup || !sf.BackupRemote || sf.BackupLocal {
		t.Errorf("mapped v6: %+v, %v, %v", sf, ok, err)
	}

	for name, b := range map[string][]byte{
		"plain tcp": diagMsg(t, unix.AF_INET, src, dst, StateEstablished, tcpInfo),
		"tls ulp":   diagMsg(t, unix.AF_INET, src, dst, StateEstablished, ulpAttr(t, "tls", 0)),
		"listener": diagMsg(t, unix.AF_INET, src, dst, 10, netlink.Attribute{Type: inetDiagULPInfo,
			Data: mustAttrs(t, netlink.Attribute{Type: ulpInfoName, Data: []byte("mptcp\x00")})}),
	} {
		if _, ok, err := parseSubflow(b); ok || err != nil {
			t.Errorf("%s: ok=%v err=%v, want not a subflow", name, ok, err)
		}
	}
	if _, _, err := parseSubflow(make([]byte, 10)); err == nil {
		t.Error("short message: no error")
	}
	bad := diagMsg(t, unix.AF_INET, src, dst, StateEstablished)
	bad = append(bad, 0xff, 0xff, 0x13, 0x00) // attribute claiming 64 KiB
	if _, _, err := parseSubflow(bad); err == nil {
		t.Error("truncated attribute: no error")
	}
	if _, _, err := parseSubflow(diagMsg(t, 99, src, dst, 1)); err == nil {
		t.Error("unknown family: no error")
	}
}

func TestTCPStateString(t *testing.T) {
	if StateEstablished.String() != "ESTAB" || TCPState(10).String() != "LISTEN" || TCPState(200).String() != "state(200)" {
		t.Errorf("TCPState names: %v %v %v", StateEstablished, TCPState(10), TCPState(200))
	}
}

func TestDiagRequest(t *testing.T) {
	b := diagRequest(unix.AF_INET6)
	if len(b) != sizeofInetDiagReqV2 || b[0] != unix.AF_INET6 || b[1] != unix.IPPROTO_TCP || b[2] != 1<<(inetDiagInfo-1) {
		t.Fatalf("diagRequest = %x", b)
	}
	if states := binary.NativeEndian.Uint32(b[4:]); states&(1<<10) != 0 || states&(1<<1) == 0 {
		t.Errorf("states %#x: want ESTABLISHED without LISTEN", states)
	}
}

func FuzzParseSubflow(f *testing.F) {
	src := netip.MustParseAddrPort("10.0.0.1:1")
	f.Add(diagMsg(f, unix.AF_INET, src, src, 1, ulpAttr(f, "mptcp", 0xffff)))
	f.Add(diagMsg(f, unix.AF_INET6, src, src, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseSubflow(b) // must not panic
	})
}

func FuzzDecodeEndpoint(f *testing.F) {
	ae := netlink.NewAttributeEncoder()
	encodeAddr(ae, Endpoint{ID: 1, Addr: netip.MustParseAddr("2001:db8::1"), Port: 1, Flags: 3, IfIndex: 2}, true, true)
	b, _ := ae.Encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeEndpoint(b) // must not panic
	})
}
