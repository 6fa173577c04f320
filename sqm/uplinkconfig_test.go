package sqm

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
		err  string
	}{
		{"220mbit", 220e6, ""},
		{"220Mbit", 220e6, ""},
		{"1.5gbit", 1.5e9, ""},
		{"800kbit", 800e3, ""},
		{"512kibit", 512 * 1024, ""},
		{"64000bit", 64000, ""},
		{"64000", 64000, ""},
		{" 20 mbit ", 20e6, ""},
		{"20mbps", 0, "ambiguous unit"},
		{"fast", 0, "not a rate"},
		{"mbit", 0, "not a rate"},
		{"-5mbit", 0, "negative"},
		{"", 0, "empty"},
		{"NaNmbit", 0, "not a rate"},
		{"1e30tbit", 0, "too large"},
	} {
		got, err := ParseRate(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRate(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %d", tc.in, uint64(got), err, uint64(tc.want))
		}
	}
	for r, s := range map[Rate]string{220e6: "220mbit", 1500e3: "1500kbit", 64001: "64001bit", 0: "0bit", 2e9: "2gbit"} {
		if r.String() != s {
			t.Errorf("Rate(%d).String() = %q, want %q", uint64(r), r.String(), s)
		}
		if back, err := ParseRate(r.String()); err != nil || back != r {
			t.Errorf("round trip of %d: %d, %v", uint64(r), uint64(back), err)
		}
	}
}

const sampleSection = `{
  "egress":  {"bandwidth": "20mbit", "diffserv": "diffserv4", "ack_filter": true, "overhead": -4, "mpu": 64, "rtt": "50ms",
              "autorate": {"enabled": true, "min": "2mbit", "max": "40mbit"}},
  "ingress": {"bandwidth": 80000000, "nat": true, "wash": true,
              "autorate": {"enabled": true, "min": "5mbit", "max": "150mbit", "controller": "cake-autorate"}}
}`

func TestUplinkConfigJSON(t *testing.T) {
	var c UplinkConfig
	if err := json.Unmarshal([]byte(sampleSection), &c); err != nil {
		t.Fatal(err)
	}
	sh, err := c.Shape("wwan0")
	if err != nil {
		t.Fatal(err)
	}
	want := Shape{
		Device: "wwan0",
		Egress: Direction{Bandwidth: 20e6, Diffserv: "diffserv4", AckFilter: true, Overhead: -4, MPU: 64, RTT: 50 * time.Millisecond,
			MinBandwidth: 2e6, MaxBandwidth: 40e6},
		Ingress: Direction{Bandwidth: 80e6, NAT: true, Wash: true, MinBandwidth: 5e6, MaxBandwidth: 150e6},
	}
	if sh != want {
		t.Fatalf("Shape =\n%+v\nwant\n%+v", sh, want)
	}
	// Marshal and read back: the same section.
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"bandwidth":"80mbit"`) || !strings.Contains(string(b), `"rtt":"50ms"`) {
		t.Errorf("marshalled: %s", b)
	}
	var c2 UplinkConfig
	if err := json.Unmarshal(b, &c2); err != nil {
		t.Fatal(err)
	}
	if sh2, _ := c2.Shape("wwan0"); sh2 != want {
		t.Errorf("round trip: %+v", sh2)
	}
	// Egress only: ingress not shaped.
	var e UplinkConfig
	if err := json.Unmarshal([]byte(`{"egress":{"bandwidth":"220mbit"}}`), &e); err != nil {
		t.Fatal(err)
	}
	if sh, err := e.Shape("eth1"); err != nil || sh.Egress.Bandwidth != 220e6 || sh.Ingress != (Direction{}) {
		t.Errorf("egress only: %+v, %v", sh, err)
	}
}

func TestUplinkConfigBadJSONNamesField(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"egress":{"bandwidth":"20mbps"}}`, "egress.bandwidth"},
		{`{"ingress":{"bandwidth":"lots"}}`, "ingress.bandwidth"},
		{`{"egress":{"bandwidth":"20mbit","rtt":"fast"}}`, "egress.rtt"},
		{`{"egress":{"bandwidth":"20mbit","rtt":100}}`, "egress.rtt"},
		{`{"egress":{"bandwidth":"20mbit","autorate":{"enabled":true,"min":true,"max":"1mbit"}}}`, "egress.autorate.min"},
	} {
		var c UplinkConfig
		err := json.Unmarshal([]byte(tc.in), &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Unmarshal(%s) = %v, want the error to name %q", tc.in, err, tc.want)
		}
	}
}

func TestUplinkConfigValidate(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{}`, ""},
		{`{"egress":{"bandwidth":"20mbit"}}`, ""},
		{`{"egress":{"bandwidth":"20mbit","autorate":{"enabled":false,"min":"90mbit","max":"1mbit"}}}`, ""},
		{`{"egress":{"autorate":{"enabled":true,"min":"2mbit","base":"20mbit","max":"80mbit"}}}`, ""},
		{`{"egress":{"bandwidth":"85mbit","autorate":{"enabled":true,"min":"90mbit","max":"80mbit"}}}`, "egress.autorate.min: 90mbit > max 80mbit"},
		{`{"ingress":{"bandwidth":"20mbit","diffserv":"diffserv5"}}`, `ingress.diffserv: "diffserv5" unknown`},
		{`{"egress":{}}`, "egress.bandwidth: zero rate"},
		{`{"egress":{"bandwidth":0}}`, "egress.bandwidth: zero rate"},
		{`{"egress":{"autorate":{"enabled":true,"min":"2mbit","max":"80mbit"}}}`, "egress.bandwidth: zero rate"},
		{`{"egress":{"bandwidth":"20mbit","autorate":{"enabled":true,"max":"80mbit"}}}`, "egress.autorate.min: zero rate"},
		{`{"egress":{"bandwidth":"20mbit","autorate":{"enabled":true,"min":"2mbit"}}}`, "egress.autorate.max: zero rate"},
		{`{"egress":{"bandwidth":"100mbit","autorate":{"enabled":true,"min":"2mbit","max":"80mbit"}}}`, "egress.bandwidth: 100mbit outside [min 2mbit, max 80mbit]"},
		{`{"egress":{"autorate":{"enabled":true,"min":"2mbit","base":"1mbit","max":"80mbit"}}}`, "egress.autorate.base: 1mbit outside"},
		{`{"egress":{"bandwidth":"20mbit","autorate":{"enabled":true,"min":"2mbit","base":"30mbit","max":"80mbit"}}}`, "egress.autorate.base: 30mbit differs from bandwidth 20mbit"},
		{`{"egress":{"bandwidth":"20mbit","autorate":{"enabled":true,"min":"2mbit","max":"80mbit","controller":"pid"}}}`, `egress.autorate.controller: "pid" unknown`},
		{`{"ingress":{"bandwidth":"20mbit","overhead":-300}}`, "ingress.overhead: -300 outside"},
		{`{"ingress":{"bandwidth":"20mbit","mpu":-1}}`, "ingress.mpu: -1 outside"},
		{`{"ingress":{"bandwidth":"20mbit","rtt":"-5ms"}}`, "ingress.rtt"},
	} {
		var c UplinkConfig
		dec := json.NewDecoder(strings.NewReader(tc.in))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tc.in, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s: Validate = %v, want prefix %q", tc.in, err, tc.want)
		}
		if _, serr := c.Shape("wwan0"); (serr == nil) != (err == nil) {
			t.Errorf("%s: Shape error %v disagrees with Validate %v", tc.in, serr, err)
		}
	}
}

func TestTopRate(t *testing.T) {
	dir := func(bw Rate, ar *AutorateConfig) *DirectionConfig {
		return &DirectionConfig{Bandwidth: bw, Autorate: ar}
	}
	for _, tc := range []struct {
		name string
		c    UplinkConfig
		want uint64
	}{
		{"nothing shaped", UplinkConfig{}, 0},
		{"the faster direction", UplinkConfig{Egress: dir(20e6, nil), Ingress: dir(80e6, nil)}, 80e6},
		{"autorate's maximum", UplinkConfig{Egress: dir(20e6, &AutorateConfig{Enabled: true, Min: 2e6, Max: 150e6})}, 150e6},
		{"a disabled autorate does not count", UplinkConfig{Egress: dir(20e6, &AutorateConfig{Min: 2e6, Max: 150e6})}, 20e6},
	} {
		if got := tc.c.TopRate(); got != tc.want {
			t.Errorf("%s: TopRate() = %d, want %d", tc.name, got, tc.want)
		}
	}
}
