package sqm

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/lifeline-router/lifeline/sqm/autorate"
)

// UplinkConfig is the "sqm" section of one uplink in the appliance config:
//
//	"sqm": {
//	  "egress":  {"bandwidth": "20mbit", "diffserv": "diffserv4", "ack_filter": true,
//	              "overhead": 0, "mpu": 0, "rtt": "100ms",
//	              "autorate": {"enabled": true, "min": "2mbit", "max": "40mbit"}},
//	  "ingress": {"bandwidth": "80mbit", "nat": true, "wash": true,
//	              "autorate": {"enabled": true, "min": "5mbit", "base": "60mbit", "max": "150mbit"}}
//	}
//
// A missing direction is not shaped. Rates are strings in tc's units ("220mbit", "1.5gbit",
// "800kbit", "512kibit") or JSON numbers in bit/s.
type UplinkConfig struct {
	Egress  *DirectionConfig `json:"egress,omitempty"`
	Ingress *DirectionConfig `json:"ingress,omitempty"`
}

// DirectionConfig is CAKE on one direction. Bandwidth is the fixed rate, or with autorate the
// rate to start at when autorate.base is not given.
type DirectionConfig struct {
	Bandwidth Rate            `json:"bandwidth,omitempty"`
	Diffserv  string          `json:"diffserv,omitempty"` // besteffort, diffserv3 (default), diffserv4, diffserv8, precedence
	AckFilter bool            `json:"ack_filter,omitempty"`
	NAT       bool            `json:"nat,omitempty"`
	Wash      bool            `json:"wash,omitempty"`
	Overhead  int             `json:"overhead,omitempty"` // bytes per packet, may be negative
	MPU       int             `json:"mpu,omitempty"`
	RTT       Duration        `json:"rtt,omitempty"` // CAKE's rtt; default 100ms
	Autorate  *AutorateConfig `json:"autorate,omitempty"`
}

// AutorateConfig bounds the controller that moves the rate with the measured link.
type AutorateConfig struct {
	Enabled bool `json:"enabled"`
	Min     Rate `json:"min"`
	// Base is where the controller starts (and where cake-autorate drifts back to at idle);
	// it defaults to the direction's bandwidth.
	Base Rate `json:"base,omitempty"`
	Max  Rate `json:"max"`
	// Controller is "lifeline" (default) or "cake-autorate" (the baseline, for comparisons).
	Controller string `json:"controller,omitempty"`
}

// Controller names accepted in AutorateConfig.Controller.
const (
	ControllerLifeline     = "lifeline"
	ControllerCakeAutorate = "cake-autorate"
)

// Rate is a bit rate in bit/s. In JSON it is a string with tc's units or a number of bit/s.
type Rate uint64

var rateUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first so "kibit" is not read as "bit" after a number "ki".
	{"kibit", 1 << 10}, {"mibit", 1 << 20}, {"gibit", 1 << 30}, {"tibit", 1 << 40},
	{"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"tbit", 1e12},
	{"bit", 1},
}

// ParseRate reads "220mbit", "1.5gbit", "800kbit", "512kibit", "64000bit" or a bare number of
// bit/s. Units are case-insensitive. "bps" suffixes are refused: tc reads "mbps" as megabytes
// per second, and a silent factor of 8 in a shaper is worse than an error.
func ParseRate(s string) (Rate, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty rate")
	}
	if strings.HasSuffix(t, "bps") {
		return 0, fmt.Errorf("%q: ambiguous unit (tc reads bps as bytes/s); write e.g. \"20mbit\"", s)
	}
	mult := 1.0
	num := t
	for _, u := range rateUnits {
		if strings.HasSuffix(t, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q: not a rate (want e.g. \"220mbit\", \"800kbit\" or bit/s)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q: negative rate", s)
	}
	bps := v * mult
	if bps >= math.MaxUint64/2 {
		return 0, fmt.Errorf("%q: rate too large", s)
	}
	return Rate(math.Round(bps)), nil
}

// String writes the shortest exact tc form: "220mbit", "1500kbit", "64001bit".
func (r Rate) String() string {
	v := uint64(r)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if v != 0 && v%u.mult == 0 {
			return strconv.FormatUint(v/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(v, 10) + "bit"
}

func (r Rate) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

func (r *Rate) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		v, perr := ParseRate(n.String())
		if perr != nil {
			return &json.UnmarshalTypeError{Value: "number " + n.String(), Type: reflect.TypeFor[Rate]()}
		}
		*r = v
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[Rate]()}
	}
	v, err := ParseRate(s)
	if err != nil {
		// An UnmarshalTypeError gets the field path filled in by encoding/json.
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("string %q (%v)", s, err), Type: reflect.TypeFor[Rate]()}
	}
	*r = v
	return nil
}

// Duration is a time.Duration written as "100ms" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: string(b) + " (want a string like \"100ms\")", Type: reflect.TypeFor[Duration]()}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("string %q", s), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// ConfigError names the field at fault, relative to the "sqm" section ("egress.autorate.min").
type ConfigError struct {
	Field string
	Msg   string
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Msg }

func cfgErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate reports the first bad field, named by its path in the section.
func (c UplinkConfig) Validate() error {
	if c.Egress != nil {
		if err := c.Egress.validate("egress"); err != nil {
			return err
		}
	}
	if c.Ingress != nil {
		if err := c.Ingress.validate("ingress"); err != nil {
			return err
		}
	}
	return nil
}

func (d *DirectionConfig) validate(p string) error {
	ar := d.Autorate
	on := ar != nil && ar.Enabled
	if !on && d.Bandwidth == 0 {
		return cfgErr(p+".bandwidth", "zero rate")
	}
	if _, ok := diffservModes[Direction{Diffserv: d.Diffserv}.diffserv()]; !ok {
		return cfgErr(p+".diffserv", "%q unknown (want besteffort, diffserv3, diffserv4, diffserv8 or precedence)", d.Diffserv)
	}
	if d.Overhead < -maxOverhead || d.Overhead > maxOverhead {
		return cfgErr(p+".overhead", "%d outside [-%d, %d]", d.Overhead, maxOverhead, maxOverhead)
	}
	if d.MPU < 0 || d.MPU > maxMPU {
		return cfgErr(p+".mpu", "%d outside [0, %d]", d.MPU, maxMPU)
	}
	rtt := time.Duration(d.RTT)
	if rtt < 0 || rtt > maxRTT || (rtt != 0 && rtt < time.Microsecond) {
		return cfgErr(p+".rtt", "%v outside [1µs, %v]", rtt, maxRTT)
	}
	if ar == nil {
		return nil
	}
	a := p + ".autorate"
	switch ar.Controller {
	case "", ControllerLifeline, ControllerCakeAutorate:
	default:
		return cfgErr(a+".controller", "%q unknown (want %s or %s)", ar.Controller, ControllerLifeline, ControllerCakeAutorate)
	}
	if !on {
		return nil
	}
	base := ar.Base
	switch {
	case ar.Min == 0:
		return cfgErr(a+".min", "zero rate")
	case ar.Max == 0:
		return cfgErr(a+".max", "zero rate")
	case ar.Min > ar.Max:
		return cfgErr(a+".min", "%v > max %v", ar.Min, ar.Max)
	case base != 0 && d.Bandwidth != 0 && base != d.Bandwidth:
		return cfgErr(a+".base", "%v differs from bandwidth %v (give one: it is the start rate)", base, d.Bandwidth)
	case base == 0 && d.Bandwidth == 0:
		return cfgErr(p+".bandwidth", "zero rate (with autorate, give bandwidth or autorate.base as the start rate)")
	}
	if base == 0 {
		base = d.Bandwidth
	}
	if base < ar.Min || base > ar.Max {
		field := a + ".base"
		if ar.Base == 0 {
			field = p + ".bandwidth"
		}
		return cfgErr(field, "%v outside [min %v, max %v]", base, ar.Min, ar.Max)
	}
	return nil
}

// Shape converts the section to the Shaper's description of dev. It validates first.
func (c UplinkConfig) Shape(dev string) (Shape, error) {
	if err := c.Validate(); err != nil {
		return Shape{}, err
	}
	sh := Shape{Device: dev, Egress: c.Egress.direction(), Ingress: c.Ingress.direction()}
	if err := sh.Validate(); err != nil {
		return Shape{}, err
	}
	return sh, nil
}

func (d *DirectionConfig) direction() Direction {
	if d == nil {
		return Direction{}
	}
	out := Direction{
		Bandwidth: uint64(d.Bandwidth),
		Diffserv:  d.Diffserv,
		AckFilter: d.AckFilter,
		NAT:       d.NAT,
		Wash:      d.Wash,
		Overhead:  d.Overhead,
		MPU:       d.MPU,
		RTT:       time.Duration(d.RTT),
	}
	if b, ok := d.bounds(); ok {
		out.Bandwidth, out.MinBandwidth, out.MaxBandwidth = b.Base, b.Min, b.Max
	}
	return out
}

// bounds are the autorate bounds of an autorate-enabled direction.
func (d *DirectionConfig) bounds() (autorate.Bounds, bool) {
	if d == nil || d.Autorate == nil || !d.Autorate.Enabled {
		return autorate.Bounds{}, false
	}
	base := d.Autorate.Base
	if base == 0 {
		base = d.Bandwidth
	}
	return autorate.Bounds{Min: uint64(d.Autorate.Min), Base: uint64(base), Max: uint64(d.Autorate.Max)}, true
}

// TopRate is the fastest rate, in bit/s, the section can shape either
// direction at: the fixed bandwidth, or autorate's maximum when that is
// higher. 0 when nothing is shaped.
func (c UplinkConfig) TopRate() uint64 {
	var top uint64
	for _, d := range []*DirectionConfig{c.Egress, c.Ingress} {
		if d == nil {
			continue
		}
		top = max(top, uint64(d.Bandwidth))
		if b, ok := d.bounds(); ok {
			top = max(top, b.Max)
		}
	}
	return top
}

// direction returns the config of dir (nil when not shaped).
func (c UplinkConfig) direction(dir Dir) *DirectionConfig {
	if dir == DirIngress {
		return c.Ingress
	}
	return c.Egress
}
