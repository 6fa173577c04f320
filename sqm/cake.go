package sqm

import (
	"fmt"
	"time"

	tc "github.com/florianl/go-tc"
	"github.com/mdlayher/netlink"
)

// TCA_CAKE_* option attributes (include/uapi/linux/pkt_sched.h).
const (
	tcaCakeBaseRate64   = 2
	tcaCakeDiffservMode = 3
	tcaCakeAtm          = 4
	tcaCakeFlowMode     = 5
	tcaCakeOverhead     = 6
	tcaCakeRTT          = 7
	tcaCakeTarget       = 8
	tcaCakeAutorate     = 9
	tcaCakeMemory       = 10
	tcaCakeNAT          = 11
	tcaCakeRaw          = 12
	tcaCakeWash         = 13
	tcaCakeMPU          = 14
	tcaCakeIngress      = 15
	tcaCakeAckFilter    = 16
	tcaCakeSplitGSO     = 17
	tcaCakeFwMark       = 18
)

// CAKE_FLOW_NAT_FLAG: the kernel reports nat inside the flow mode as well.
const cakeFlowNATFlag = 64

const cakeDefaultRTT = 100 * time.Millisecond

// CakeOptions is CAKE's configuration as the kernel dumps it back (TCA_OPTIONS of a cake qdisc).
type CakeOptions struct {
	Bandwidth uint64 // bit/s (the kernel keeps bytes/s; 0 = unlimited)
	Diffserv  string
	AckFilter uint32 // 0 none, 1 ack-filter, 2 ack-filter-aggressive
	NAT       bool
	Wash      bool
	Raw       bool // no overhead compensation: the kernel counts the whole frame
	Overhead  int32
	MPU       uint32
	RTT       time.Duration
	Target    time.Duration
	Ingress   bool
	FlowMode  uint32
	SplitGSO  bool
	Memory    uint32
	FwMark    uint32
	Autorate  bool
	Atm       uint32
}

// cakeObject builds the go-tc description of d for a full add/replace/change. natOff says whether
// to send nat=0: the kernel answers EOPNOTSUPP to any TCA_CAKE_NAT without conntrack, so we only
// send it when nat is wanted or must be switched off.
func cakeObject(d Direction, ingress, natOff bool) *tc.Cake {
	u32 := func(v uint32) *uint32 { return &v }
	b2u := func(b bool) *uint32 {
		if b {
			return u32(1)
		}
		return u32(0)
	}
	rate := d.Bandwidth / 8 // TCA_CAKE_BASE_RATE64 is in bytes/s, as tc's "bandwidth" after get_rate64
	rtt := d.RTT
	if rtt == 0 {
		rtt = cakeDefaultRTT
	}
	target := rtt / 20 // what tc(8) derives from "rtt": CAKE's target is 5% of the interval
	if target < time.Microsecond {
		target = time.Microsecond
	}
	c := &tc.Cake{
		BaseRate:     &rate,
		DiffServMode: u32(diffservModes[d.diffserv()]),
		AckFilter:    b2u(d.AckFilter),
		Wash:         b2u(d.Wash),
		// The kernel reads TCA_CAKE_OVERHEAD as s32; go-tc only has a uint32 field, so a
		// negative overhead travels as its two's complement.
		Overhead: u32(uint32(int32(d.Overhead))),
		Mpu:      u32(uint32(d.MPU)),
		Rtt:      u32(uint32(rtt / time.Microsecond)),
		Target:   u32(uint32(target / time.Microsecond)),
		Ingress:  b2u(ingress),
	}
	if d.Overhead == 0 {
		// Overhead 0 means CAKE's "raw" mode (count the frame as the kernel sees it); the kernel
		// applies TCA_CAKE_RAW after TCA_CAKE_OVERHEAD, as tc's "raw" keyword does.
		c.Raw = u32(0)
	}
	if d.NAT || natOff {
		c.Nat = b2u(d.NAT)
	}
	return c
}

// matches reports whether the kernel's options already are what d asks for, and whether
// they differ only in bandwidth (then a rate-only change keeps everything else).
func (o CakeOptions) matches(d Direction, ingress bool) (all, allButRate bool) {
	rtt := d.RTT
	if rtt == 0 {
		rtt = cakeDefaultRTT
	}
	ack := uint32(0)
	if d.AckFilter {
		ack = 1
	}
	allButRate = o.Diffserv == d.diffserv() &&
		o.AckFilter == ack &&
		o.NAT == d.NAT &&
		o.Wash == d.Wash &&
		o.Overhead == int32(d.Overhead) &&
		o.Raw == (d.Overhead == 0) &&
		o.MPU == uint32(d.MPU) &&
		o.RTT == rtt &&
		o.Ingress == ingress
	return allButRate && o.Bandwidth == d.Bandwidth/8*8, allButRate
}

// ParseCakeOptions decodes the TCA_OPTIONS payload of a cake qdisc.
func ParseCakeOptions(b []byte) (CakeOptions, error) {
	var o CakeOptions
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return o, fmt.Errorf("cake options: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case tcaCakeBaseRate64:
			o.Bandwidth = ad.Uint64() * 8
		case tcaCakeDiffservMode:
			m := ad.Uint32()
			o.Diffserv = fmt.Sprintf("diffserv-mode-%d", m)
			for name, v := range diffservModes {
				if v == m {
					o.Diffserv = name
				}
			}
		case tcaCakeAtm:
			o.Atm = ad.Uint32()
		case tcaCakeFlowMode:
			o.FlowMode = ad.Uint32()
		case tcaCakeOverhead:
			o.Overhead = int32(ad.Uint32())
		case tcaCakeRTT:
			o.RTT = time.Duration(ad.Uint32()) * time.Microsecond
		case tcaCakeTarget:
			o.Target = time.Duration(ad.Uint32()) * time.Microsecond
		case tcaCakeAutorate:
			o.Autorate = ad.Uint32() != 0
		case tcaCakeMemory:
			o.Memory = ad.Uint32()
		case tcaCakeNAT:
			o.NAT = ad.Uint32() != 0
		case tcaCakeRaw:
			o.Raw = true
		case tcaCakeWash:
			o.Wash = ad.Uint32() != 0
		case tcaCakeMPU:
			o.MPU = ad.Uint32()
		case tcaCakeIngress:
			o.Ingress = ad.Uint32() != 0
		case tcaCakeAckFilter:
			o.AckFilter = ad.Uint32()
		case tcaCakeSplitGSO:
			o.SplitGSO = ad.Uint32() != 0
		case tcaCakeFwMark:
			o.FwMark = ad.Uint32()
		}
		// Unknown attributes (newer kernels) are skipped, not fatal: read-back must not break
		// on a kernel upgrade.
	}
	if err := ad.Err(); err != nil {
		return o, fmt.Errorf("cake options: %w", err)
	}
	return o, nil
}
