package sqm

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
)

// encodeStats2 builds a TCA_STATS2 payload the way sch_cake's cake_dump_stats does.
func encodeStats2(t *testing.T, want CakeStats) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	basic := make([]byte, 16)
	nlenc.PutUint64(basic[0:8], want.Bytes)
	nlenc.PutUint32(basic[8:12], uint32(want.Packets))
	ae.Bytes(tcaStatsBasic, basic)
	q := make([]byte, 20)
	for i, v := range []uint32{want.Qlen, want.Backlog, want.Drops, want.Requeues, want.Overlimits} {
		nlenc.PutUint32(q[4*i:4*i+4], v)
	}
	ae.Bytes(tcaStatsQueue, q)
	ae.Nested(tcaStatsApp, func(ae *netlink.AttributeEncoder) error {
		ae.Uint64(tcaCakeStatsCapacityEstimate64, want.CapacityEstimate/8)
		ae.Uint32(tcaCakeStatsMemoryLimit, want.MemoryLimit)
		ae.Uint32(tcaCakeStatsMemoryUsed, want.MemoryUsed)
		ae.Uint32(tcaCakeStatsAvgNetoff, want.AvgNetOff)
		ae.Uint32(tcaCakeStatsMaxNetlen, want.MaxNetLen)
		ae.Uint32(tcaCakeStatsMaxAdjlen, want.MaxAdjLen)
		ae.Uint32(tcaCakeStatsMinNetlen, want.MinNetLen)
		ae.Uint32(tcaCakeStatsMinAdjlen, want.MinAdjLen)
		ae.Nested(tcaCakeStatsTinStats, func(ae *netlink.AttributeEncoder) error {
			for i, tin := range want.Tins {
				ae.Nested(uint16(i+1), func(ae *netlink.AttributeEncoder) error {
					us := func(d time.Duration) uint32 { return uint32(d / time.Microsecond) }
					ae.Uint64(tcaCakeTinThresholdRate64, tin.ThresholdRate/8)
					ae.Uint64(tcaCakeTinSentBytes64, tin.SentBytes)
					ae.Uint32(tcaCakeTinBacklogBytes, tin.BacklogBytes)
					ae.Uint32(tcaCakeTinTargetUs, us(tin.Target))
					ae.Uint32(tcaCakeTinIntervalUs, us(tin.Interval))
					ae.Uint32(tcaCakeTinSentPackets, tin.SentPackets)
					ae.Uint32(tcaCakeTinDroppedPackets, tin.DroppedPackets)
					ae.Uint32(tcaCakeTinECNMarkedPackets, tin.ECNMarkedPackets)
					ae.Uint32(tcaCakeTinAcksDroppedPkts, tin.AckDropsPackets)
					ae.Uint32(tcaCakeTinPeakDelayUs, us(tin.PeakDelay))
					ae.Uint32(tcaCakeTinAvgDelayUs, us(tin.AvgDelay))
					ae.Uint32(tcaCakeTinBaseDelayUs, us(tin.BaseDelay))
					ae.Uint32(tcaCakeTinWayIndirectHits, tin.WayIndirectHits)
					ae.Uint32(tcaCakeTinWayMisses, tin.WayMisses)
					ae.Uint32(tcaCakeTinWayCollisions, tin.WayCollisions)
					ae.Uint32(tcaCakeTinSparseFlows, tin.SparseFlows)
					ae.Uint32(tcaCakeTinBulkFlows, tin.BulkFlows)
					ae.Uint32(tcaCakeTinUnresponsiveFlows, tin.UnresponsiveFlows)
					ae.Uint32(tcaCakeTinMaxSkblen, tin.MaxSkbLen)
					ae.Uint32(tcaCakeTinFlowQuantum, tin.FlowQuantum)
					ae.Uint32(99, 7) // an attribute from a future kernel must be skipped
					return nil
				})
			}
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStats2RoundTrip(t *testing.T) {
	want := CakeStats{
		Bytes: 123456789012, Packets: 98765, Qlen: 3, Backlog: 4500, Drops: 17, Requeues: 1, Overlimits: 1234,
		CapacityEstimate: 80e6, MemoryLimit: 4 << 20, MemoryUsed: 123456, AvgNetOff: 14,
		MinNetLen: 42, MaxNetLen: 1514, MinAdjLen: 42, MaxAdjLen: 1514,
	}
	for i := 0; i < 4; i++ { // diffserv4
		want.Tins = append(want.Tins, TinStats{
			ThresholdRate: uint64(20e6 >> i), SentBytes: uint64(1000 * (i + 1)), SentPackets: uint32(10 + i),
			DroppedPackets: uint32(i), ECNMarkedPackets: uint32(2 * i), AckDropsPackets: uint32(3 * i),
			BacklogBytes: uint32(1500 * i), Target: 5 * time.Millisecond, Interval: 100 * time.Millisecond,
			PeakDelay: time.Duration(i+1) * time.Millisecond, AvgDelay: time.Duration(i+1) * 100 * time.Microsecond,
			BaseDelay: 7 * time.Microsecond, WayIndirectHits: 1, WayMisses: 2, WayCollisions: 3,
			SparseFlows: 4, BulkFlows: uint32(i), UnresponsiveFlows: 0, MaxSkbLen: 1514, FlowQuantum: 1514,
		})
	}
	got, hasApp, err := ParseStats2(encodeStats2(t, want))
	if err != nil {
		t.Fatal(err)
	}
	if !hasApp {
		t.Error("hasApp = false")
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ParseStats2 mismatch (-want +got):\n%s", d)
	}
	backlog, drops, marks, peak := got.Totals()
	if backlog != 0+1500+3000+4500 || drops != 0+1+2+3 || marks != 0+2+4+6 || peak != 4*time.Millisecond {
		t.Errorf("Totals = %d %d %d %v", backlog, drops, marks, peak)
	}
}

func TestParseStats2Errors(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(tcaStatsQueue, []byte{1, 2, 3})
	b, _ := ae.Encode()
	if _, _, err := ParseStats2(b); err == nil {
		t.Error("short TCA_STATS_QUEUE accepted")
	}
	ae = netlink.NewAttributeEncoder()
	ae.Nested(tcaStatsApp, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(tcaCakeStatsTinStats, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(9, func(ae *netlink.AttributeEncoder) error { ae.Uint32(2, 1); return nil })
			return nil
		})
		return nil
	})
	b, _ = ae.Encode()
	if _, _, err := ParseStats2(b); err == nil {
		t.Error("tin index 9 accepted")
	}
	if _, _, err := ParseStats2([]byte{1, 2, 3}); err == nil {
		t.Error("garbage accepted")
	}
}

func TestParseCakeOptions(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint64(tcaCakeBaseRate64, 2500000)
	ae.Uint32(tcaCakeFlowMode, 7)
	ae.Uint32(tcaCakeRTT, 50000)
	ae.Uint32(tcaCakeTarget, 2500)
	ae.Uint32(tcaCakeIngress, 1)
	ae.Uint32(tcaCakeAckFilter, 1)
	ae.Uint32(tcaCakeNAT, 0)
	ae.Uint32(tcaCakeDiffservMode, 1)
	ae.Uint32(tcaCakeWash, 1)
	ae.Uint32(tcaCakeOverhead, uint32(0xfffffffc)) // -4
	ae.Uint32(tcaCakeMPU, 64)
	ae.Uint32(tcaCakeSplitGSO, 1)
	ae.Uint32(42, 1) // future attribute
	b, _ := ae.Encode()
	o, err := ParseCakeOptions(b)
	if err != nil {
		t.Fatal(err)
	}
	want := CakeOptions{Bandwidth: 20e6, Diffserv: "diffserv4", AckFilter: 1, Wash: true, Overhead: -4, MPU: 64,
		RTT: 50 * time.Millisecond, Target: 2500 * time.Microsecond, Ingress: true, FlowMode: 7, SplitGSO: true}
	if d := cmp.Diff(want, o); d != "" {
		t.Errorf("ParseCakeOptions (-want +got):\n%s", d)
	}
	d := Direction{Bandwidth: 20e6, Diffserv: "diffserv4", AckFilter: true, Wash: true, Overhead: -4, MPU: 64, RTT: 50 * time.Millisecond}
	if all, _ := o.matches(d, true); !all {
		t.Error("matches(same) = false")
	}
	d.Bandwidth = 30e6
	if all, butRate := o.matches(d, true); all || !butRate {
		t.Errorf("matches(rate only differs) = %v, %v; want false, true", all, butRate)
	}
	d.Diffserv = "besteffort"
	if _, butRate := o.matches(d, true); butRate {
		t.Error("matches(diffserv differs) says rate-only")
	}
}

func TestParseFilterMirred(t *testing.T) {
	// A u32 filter as the kernel dumps it: TCA_KIND, TCA_OPTIONS{TCA_U32_ACT{1:{kind mirred, options{parms}}}}.
	ae := netlink.NewAttributeEncoder()
	ae.String(tcaKind, "u32")
	ae.Nested(tcaOptions, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(7, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(1, func(ae *netlink.AttributeEncoder) error {
				ae.String(tcaActKind, "mirred")
				ae.Nested(tcaActOptions, func(ae *netlink.AttributeEncoder) error {
					p := make([]byte, 28)
					nlenc.PutUint32(p[24:], 42)
					ae.Bytes(tcaMirredParm, p)
					return nil
				})
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, _ := ae.Encode()
	msg := append(tcmsg(3, 0x800, ingressHandle, redirectPref<<16|uint32(htons(ethPAll))), attrs...)
	f, err := parseFilterMsg(msg)
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != "u32" || f.RedirectTo != 42 || f.Pref != redirectPref || f.Protocol != ethPAll || f.Ifindex != 3 {
		t.Errorf("parseFilterMsg = %+v", f)
	}
}
