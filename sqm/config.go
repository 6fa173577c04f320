package sqm

import (
	"fmt"
	"hash/fnv"
	"time"
)

// Shape is the desired CAKE set-up of one uplink. A direction with Bandwidth 0 is not shaped,
// and Ensure removes what it installed there before.
type Shape struct {
	Device  string    // uplink interface, e.g. "wwan0"
	Egress  Direction // upload: CAKE as the root qdisc of Device
	Ingress Direction // download: CAKE as the root qdisc of IFBName(Device)
}

// Direction holds the CAKE options of one direction.
type Direction struct {
	Bandwidth uint64        // bit/s; 0 = direction not shaped
	Diffserv  string        // "", besteffort, diffserv3, diffserv4, diffserv8, precedence ("" = diffserv3, CAKE's default)
	AckFilter bool          // drop redundant pure ACKs (useful on the asymmetric LTE uplink)
	NAT       bool          // look up the pre-NAT 5-tuple for flow isolation
	Wash      bool          // clear DSCP after classification
	Overhead  int           // bytes added per packet on the wire, may be negative (e.g. -4 for PPP stripping)
	MPU       int           // minimum packet unit in bytes; 0 = none
	RTT       time.Duration // CAKE's rtt parameter; 0 = CAKE's default (100 ms)

	// MinBandwidth and MaxBandwidth bound what an autorate controller may set with SetRate
	// (bit/s). Both 0 = fixed rate; otherwise Bandwidth is the start rate and must lie within.
	MinBandwidth, MaxBandwidth uint64
}

// Dir selects one direction of an uplink.
type Dir int

const (
	DirEgress Dir = iota
	DirIngress
)

func (d Dir) String() string {
	switch d {
	case DirEgress:
		return "egress"
	case DirIngress:
		return "ingress"
	}
	return fmt.Sprintf("Dir(%d)", int(d))
}

// Kernel values of CAKE_DIFFSERV_* (include/uapi/linux/pkt_sched.h).
var diffservModes = map[string]uint32{
	"diffserv3":  0,
	"diffserv4":  1,
	"diffserv8":  2,
	"besteffort": 3,
	"precedence": 4,
}

// Kernel limits of cake_change: overhead is clamped to ±64 by tc(8), mpu to 0..256.
const (
	maxOverhead = 256
	maxMPU      = 256
	maxRTT      = time.Hour
)

// Validate reports the first bad field, named as in the config ("Egress.Diffserv").
func (s Shape) Validate() error {
	if s.Device == "" {
		return fmt.Errorf("sqm: Shape.Device: empty")
	}
	if len(s.Device) > 15 {
		return fmt.Errorf("sqm: Shape.Device %q: longer than 15 bytes (IFNAMSIZ)", s.Device)
	}
	if err := s.Egress.validate("Egress"); err != nil {
		return fmt.Errorf("sqm: %s: %w", s.Device, err)
	}
	if err := s.Ingress.validate("Ingress"); err != nil {
		return fmt.Errorf("sqm: %s: %w", s.Device, err)
	}
	return nil
}

func (d Direction) validate(name string) error {
	if d.MinBandwidth != 0 || d.MaxBandwidth != 0 {
		switch {
		case d.MinBandwidth == 0:
			return fmt.Errorf("%s.MinBandwidth: zero rate", name)
		case d.MaxBandwidth == 0:
			return fmt.Errorf("%s.MaxBandwidth: zero rate", name)
		case d.MinBandwidth > d.MaxBandwidth:
			return fmt.Errorf("%s.MinBandwidth %d > %s.MaxBandwidth %d", name, d.MinBandwidth, name, d.MaxBandwidth)
		case d.Bandwidth == 0:
			return fmt.Errorf("%s.Bandwidth: zero rate with autorate bounds set", name)
		case d.Bandwidth < d.MinBandwidth || d.Bandwidth > d.MaxBandwidth:
			return fmt.Errorf("%s.Bandwidth %d outside [MinBandwidth %d, MaxBandwidth %d]", name, d.Bandwidth, d.MinBandwidth, d.MaxBandwidth)
		}
	}
	if _, ok := diffservModes[d.diffserv()]; !ok {
		return fmt.Errorf("%s.Diffserv: unknown mode %q (want besteffort, diffserv3, diffserv4, diffserv8 or precedence)", name, d.Diffserv)
	}
	if d.Overhead < -maxOverhead || d.Overhead > maxOverhead {
		return fmt.Errorf("%s.Overhead: %d outside [-%d, %d]", name, d.Overhead, maxOverhead, maxOverhead)
	}
	if d.MPU < 0 || d.MPU > maxMPU {
		return fmt.Errorf("%s.MPU: %d outside [0, %d]", name, d.MPU, maxMPU)
	}
	if d.RTT < 0 || d.RTT > maxRTT {
		return fmt.Errorf("%s.RTT: %v outside [0, %v]", name, d.RTT, maxRTT)
	}
	if d.RTT != 0 && d.RTT < time.Microsecond {
		return fmt.Errorf("%s.RTT: %v below CAKE's 1µs resolution", name, d.RTT)
	}
	return nil
}

func (d Direction) diffserv() string {
	if d.Diffserv == "" {
		return "diffserv3"
	}
	return d.Diffserv
}

// IFBName is the IFB device that carries dev's ingress: "ifb-<dev>", or, when that would
// exceed IFNAMSIZ-1 (15 bytes), "ifb-" plus a prefix of dev and a hash so two long names
// that share a prefix do not collide.
func IFBName(dev string) string {
	if n := "ifb-" + dev; len(n) <= 15 {
		return n
	}
	h := fnv.New32a()
	h.Write([]byte(dev))
	return fmt.Sprintf("ifb-%s%05x", dev[:6], h.Sum32()&0xfffff)
}
