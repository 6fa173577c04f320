package sqm

import (
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
)

// TCA_STATS_* inside TCA_STATS2 (include/uapi/linux/gen_stats.h).
const (
	tcaStatsBasic = 1
	tcaStatsQueue = 3
	tcaStatsApp   = 4
	tcaStatsPkt64 = 8
)

// TCA_CAKE_STATS_* inside TCA_STATS_APP of a cake qdisc. The enum starts
// with __TCA_CAKE_STATS_INVALID and TCA_CAKE_STATS_PAD (as the tin enum
// does): the first real attribute is 2.
const (
	tcaCakeStatsCapacityEstimate64 = 2
	tcaCakeStatsMemoryLimit        = 3
	tcaCakeStatsMemoryUsed         = 4
	tcaCakeStatsAvgNetoff          = 5
	tcaCakeStatsMinNetlen          = 6
	tcaCakeStatsMaxNetlen          = 7
	tcaCakeStatsMinAdjlen          = 8
	tcaCakeStatsMaxAdjlen          = 9
	tcaCakeStatsTinStats           = 10
)

// TCA_CAKE_TIN_STATS_* inside each tin's nest (nest type = tin index + 1).
const (
	tcaCakeTinSentPackets       = 2
	tcaCakeTinSentBytes64       = 3
	tcaCakeTinDroppedPackets    = 4
	tcaCakeTinDroppedBytes64    = 5
	tcaCakeTinAcksDroppedPkts   = 6
	tcaCakeTinAcksDroppedBytes  = 7
	tcaCakeTinECNMarkedPackets  = 8
	tcaCakeTinECNMarkedBytes64  = 9
	tcaCakeTinBacklogPackets    = 10
	tcaCakeTinBacklogBytes      = 11
	tcaCakeTinThresholdRate64   = 12
	tcaCakeTinTargetUs          = 13
	tcaCakeTinIntervalUs        = 14
	tcaCakeTinWayIndirectHits   = 15
	tcaCakeTinWayMisses         = 16
	tcaCakeTinWayCollisions     = 17
	tcaCakeTinPeakDelayUs       = 18
	tcaCakeTinAvgDelayUs        = 19
	tcaCakeTinBaseDelayUs       = 20
	tcaCakeTinSparseFlows       = 21
	tcaCakeTinBulkFlows         = 22
	tcaCakeTinUnresponsiveFlows = 23
	tcaCakeTinMaxSkblen         = 24
	tcaCakeTinFlowQuantum       = 25
)

// CakeStats is what one CAKE instance reports: the generic qdisc counters (TCA_STATS_BASIC,
// TCA_STATS_QUEUE) and CAKE's own (TCA_STATS_APP), including one TinStats per tin.
type CakeStats struct {
	Bytes      uint64 // sent
	Packets    uint64 // sent
	Qlen       uint32
	Backlog    uint32 // bytes
	Drops      uint32
	Requeues   uint32
	Overlimits uint32

	CapacityEstimate uint64 // bit/s, CAKE's ingress-mode estimate
	MemoryLimit      uint32 // bytes
	MemoryUsed       uint32 // bytes, peak
	AvgNetOff        uint32
	MinNetLen        uint32
	MaxNetLen        uint32
	MinAdjLen        uint32
	MaxAdjLen        uint32

	Tins []TinStats
}

// TinStats is one priority tin of CAKE (1 for besteffort, 3 for diffserv3, 4, 8 ...).
type TinStats struct {
	ThresholdRate     uint64 // bit/s
	SentBytes         uint64
	SentPackets       uint32
	DroppedBytes      uint64
	DroppedPackets    uint32
	AckDropsBytes     uint64
	AckDropsPackets   uint32
	ECNMarkedBytes    uint64
	ECNMarkedPackets  uint32
	BacklogBytes      uint32
	BacklogPackets    uint32
	Target            time.Duration
	Interval          time.Duration
	PeakDelay         time.Duration
	AvgDelay          time.Duration
	BaseDelay         time.Duration
	WayIndirectHits   uint32
	WayMisses         uint32
	WayCollisions     uint32
	SparseFlows       uint32
	BulkFlows         uint32
	UnresponsiveFlows uint32
	MaxSkbLen         uint32
	FlowQuantum       uint32
}

// Totals sums the tins: what a metrics exporter or the controller wants most of the time.
func (s CakeStats) Totals() (backlogBytes uint64, drops, ecnMarks uint64, peakDelay time.Duration) {
	for _, t := range s.Tins {
		backlogBytes += uint64(t.BacklogBytes)
		drops += uint64(t.DroppedPackets)
		ecnMarks += uint64(t.ECNMarkedPackets)
		peakDelay = max(peakDelay, t.PeakDelay)
	}
	return
}

// ParseStats2 decodes the payload of TCA_STATS2 of a cake qdisc. hasApp reports whether
// CAKE's own statistics (TCA_STATS_APP) were present.
func ParseStats2(b []byte) (s CakeStats, hasApp bool, err error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return s, false, fmt.Errorf("TCA_STATS2: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case tcaStatsBasic:
			// struct gnet_stats_basic { __u64 bytes; __u32 packets; } (12 bytes + padding)
			v := ad.Bytes()
			if len(v) < 12 {
				return s, false, fmt.Errorf("TCA_STATS_BASIC: %d bytes, want ≥ 12", len(v))
			}
			s.Bytes = nlenc.Uint64(v[0:8])
			if s.Packets == 0 { // TCA_STATS_PKT64, when present, is authoritative
				s.Packets = uint64(nlenc.Uint32(v[8:12]))
			}
		case tcaStatsPkt64:
			s.Packets = ad.Uint64()
		case tcaStatsQueue:
			// struct gnet_stats_queue { qlen, backlog, drops, requeues, overlimits } (u32 each)
			v := ad.Bytes()
			if len(v) < 20 {
				return s, false, fmt.Errorf("TCA_STATS_QUEUE: %d bytes, want 20", len(v))
			}
			s.Qlen = nlenc.Uint32(v[0:4])
			s.Backlog = nlenc.Uint32(v[4:8])
			s.Drops = nlenc.Uint32(v[8:12])
			s.Requeues = nlenc.Uint32(v[12:16])
			s.Overlimits = nlenc.Uint32(v[16:20])
		case tcaStatsApp:
			hasApp = true
			ad.Nested(func(nad *netlink.AttributeDecoder) error { return parseCakeApp(nad, &s) })
		}
	}
	if err := ad.Err(); err != nil {
		return s, hasApp, fmt.Errorf("TCA_STATS2: %w", err)
	}
	return s, hasApp, nil
}

func parseCakeApp(ad *netlink.AttributeDecoder, s *CakeStats) error {
	for ad.Next() {
		switch ad.Type() {
		case tcaCakeStatsCapacityEstimate64:
			s.CapacityEstimate = ad.Uint64() * 8 // kernel: bytes/s
		case tcaCakeStatsMemoryLimit:
			s.MemoryLimit = ad.Uint32()
		case tcaCakeStatsMemoryUsed:
			s.MemoryUsed = ad.Uint32()
		case tcaCakeStatsAvgNetoff:
			s.AvgNetOff = ad.Uint32()
		case tcaCakeStatsMinNetlen:
			s.MinNetLen = ad.Uint32()
		case tcaCakeStatsMaxNetlen:
			s.MaxNetLen = ad.Uint32()
		case tcaCakeStatsMinAdjlen:
			s.MinAdjLen = ad.Uint32()
		case tcaCakeStatsMaxAdjlen:
			s.MaxAdjLen = ad.Uint32()
		case tcaCakeStatsTinStats:
			ad.Nested(func(tad *netlink.AttributeDecoder) error {
				for tad.Next() {
					i := int(tad.Type()) - 1 // nest type is tin index + 1
					if i < 0 || i >= 8 {
						return fmt.Errorf("TCA_CAKE_STATS_TIN_STATS: tin nest type %d outside 1..8", tad.Type())
					}
					for len(s.Tins) <= i {
						s.Tins = append(s.Tins, TinStats{})
					}
					tad.Nested(func(nad *netlink.AttributeDecoder) error { return parseTin(nad, &s.Tins[i]) })
				}
				return tad.Err()
			})
		}
	}
	return ad.Err()
}

func parseTin(ad *netlink.AttributeDecoder, t *TinStats) error {
	us := func() time.Duration { return time.Duration(ad.Uint32()) * time.Microsecond }
	for ad.Next() {
		switch ad.Type() {
		case tcaCakeTinSentPackets:
			t.SentPackets = ad.Uint32()
		case tcaCakeTinSentBytes64:
			t.SentBytes = ad.Uint64()
		case tcaCakeTinDroppedPackets:
			t.DroppedPackets = ad.Uint32()
		case tcaCakeTinDroppedBytes64:
			t.DroppedBytes = ad.Uint64()
		case tcaCakeTinAcksDroppedPkts:
			t.AckDropsPackets = ad.Uint32()
		case tcaCakeTinAcksDroppedBytes:
			t.AckDropsBytes = ad.Uint64()
		case tcaCakeTinECNMarkedPackets:
			t.ECNMarkedPackets = ad.Uint32()
		case tcaCakeTinECNMarkedBytes64:
			t.ECNMarkedBytes = ad.Uint64()
		case tcaCakeTinBacklogPackets:
			t.BacklogPackets = ad.Uint32()
		case tcaCakeTinBacklogBytes:
			t.BacklogBytes = ad.Uint32()
		case tcaCakeTinThresholdRate64:
			t.ThresholdRate = ad.Uint64() * 8
		case tcaCakeTinTargetUs:
			t.Target = us()
		case tcaCakeTinIntervalUs:
			t.Interval = us()
		case tcaCakeTinWayIndirectHits:
			t.WayIndirectHits = ad.Uint32()
		case tcaCakeTinWayMisses:
			t.WayMisses = ad.Uint32()
		case tcaCakeTinWayCollisions:
			t.WayCollisions = ad.Uint32()
		case tcaCakeTinPeakDelayUs:
			t.PeakDelay = us()
		case tcaCakeTinAvgDelayUs:
			t.AvgDelay = us()
		case tcaCakeTinBaseDelayUs:
			t.BaseDelay = us()
		case tcaCakeTinSparseFlows:
			t.SparseFlows = ad.Uint32()
		case tcaCakeTinBulkFlows:
			t.BulkFlows = ad.Uint32()
		case tcaCakeTinUnresponsiveFlows:
			t.UnresponsiveFlows = ad.Uint32()
		case tcaCakeTinMaxSkblen:
			t.MaxSkbLen = ad.Uint32()
		case tcaCakeTinFlowQuantum:
			t.FlowQuantum = ad.Uint32()
		}
	}
	return ad.Err()
}
