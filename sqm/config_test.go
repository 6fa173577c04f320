package sqm

import (
	"strings"
	"testing"
	"time"
)

func TestValidateNamesField(t *testing.T) {
	good := Direction{Bandwidth: 20e6, Diffserv: "diffserv4", AckFilter: true, Overhead: -4, MPU: 64, RTT: 50 * time.Millisecond}
	for _, tc := range []struct {
		name string
		sh   Shape
		want string // substring of the error; "" = valid
	}{
		{"ok", Shape{Device: "wwan0", Egress: good, Ingress: good}, ""},
		{"off", Shape{Device: "wwan0"}, ""},
		{"autorate ok", Shape{Device: "wwan0", Egress: Direction{Bandwidth: 20e6, MinBandwidth: 5e6, MaxBandwidth: 80e6}}, ""},
		{"no device", Shape{Egress: good}, "Shape.Device"},
		{"long device", Shape{Device: "abcdefghijklmnop"}, "Shape.Device"},
		{"unknown diffserv", Shape{Device: "wwan0", Ingress: Direction{Bandwidth: 1e6, Diffserv: "diffserv5"}}, "Ingress.Diffserv"},
		{"min > max", Shape{Device: "wwan0", Egress: Direction{Bandwidth: 20e6, MinBandwidth: 90e6, MaxBandwidth: 80e6}}, "Egress.MinBandwidth 90000000 > Egress.MaxBandwidth"},
		{"zero min", Shape{Device: "wwan0", Egress: Direction{Bandwidth: 20e6, MaxBandwidth: 80e6}}, "Egress.MinBandwidth: zero rate"},
		{"zero max", Shape{Device: "wwan0", Egress: Direction{Bandwidth: 20e6, MinBandwidth: 8e6}}, "Egress.MaxBandwidth: zero rate"},
		{"zero rate with bounds", Shape{Device: "wwan0", Ingress: Direction{MinBandwidth: 5e6, MaxBandwidth: 80e6}}, "Ingress.Bandwidth: zero rate"},
		{"rate outside bounds", Shape{Device: "wwan0", Ingress: Direction{Bandwidth: 1e6, MinBandwidth: 5e6, MaxBandwidth: 80e6}}, "Ingress.Bandwidth 1000000 outside"},
		{"overhead", Shape{Device: "wwan0", Egress: Direction{Bandwidth: 1e6, Overhead: -300}}, "Egress.Overhead"},
		{"mpu", Shape{Device: "wwan0", Egress: Direction{Bandwidth: 1e6, MPU: -1}}, "Egress.MPU"},
		{"rtt", Shape{Device: "wwan0", Egress: Direction{Bandwidth: 1e6, RTT: -time.Second}}, "Egress.RTT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.sh.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate: nil, want error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate: %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestIFBName(t *testing.T) {
	if got := IFBName("wwan0"); got != "ifb-wwan0" {
		t.Errorf("IFBName(wwan0) = %q", got)
	}
	a, b := IFBName("enx001122334455"), IFBName("enx001122334466")
	if len(a) > 15 || len(b) > 15 {
		t.Errorf("IFBName too long: %q %q", a, b)
	}
	if a == b {
		t.Errorf("IFBName collides for two long names: %q", a)
	}
	if !strings.HasPrefix(a, "ifb-enx001") {
		t.Errorf("IFBName(enx001122334455) = %q, want prefix ifb-enx001", a)
	}
}

func TestCakeObjectEncoding(t *testing.T) {
	c := cakeObject(Direction{Bandwidth: 20e6, Diffserv: "diffserv4", AckFilter: true, Overhead: -4, MPU: 64}, true, false)
	if *c.BaseRate != 2500000 {
		t.Errorf("BaseRate = %d bytes/s, want 2500000", *c.BaseRate)
	}
	if int32(*c.Overhead) != -4 {
		t.Errorf("Overhead = %d, want -4 as s32", int32(*c.Overhead))
	}
	if *c.DiffServMode != 1 || *c.AckFilter != 1 || *c.Ingress != 1 || *c.Mpu != 64 {
		t.Errorf("cake = diffserv %d ack %d ingress %d mpu %d", *c.DiffServMode, *c.AckFilter, *c.Ingress, *c.Mpu)
	}
	if c.Raw != nil {
		t.Errorf("Raw set with a non-zero overhead")
	}
	if c.Nat != nil {
		t.Errorf("Nat sent although not wanted (fails on kernels without conntrack)")
	}
	if *c.Rtt != 100000 || *c.Target != 5000 {
		t.Errorf("rtt %d target %d, want CAKE defaults 100000/5000", *c.Rtt, *c.Target)
	}
	c = cakeObject(Direction{Bandwidth: 1e6}, false, true)
	if c.Raw == nil || c.Nat == nil || *c.Nat != 0 {
		t.Errorf("overhead 0 should send raw, natOff should send nat=0: raw %v nat %v", c.Raw, c.Nat)
	}
}
