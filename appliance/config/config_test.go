package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/sqm"
)

func example(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/example.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExampleParses(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Uplinks) != 3 || c.Uplinks[2].Role != RoleBackup {
		t.Fatalf("uplinks = %+v", c.Uplinks)
	}
	if got := c.Failover.ProbeInterval.D(); got != 5*time.Millisecond {
		t.Errorf("probe_interval = %v", got)
	}
	if got := c.EndpointFor(c.Uplinks[1]); got != "198.51.100.2:51821" {
		t.Errorf("EndpointFor(wifi) = %q", got)
	}
	if got := c.Uplinks[0].WireGuard.ConcentratorInterface; got != "cwg-fiber" {
		t.Errorf("default concentrator_interface = %q", got)
	}
	if err := c.ValidateRouter(); err != nil {
		t.Errorf("ValidateRouter: %v", err)
	}
	if err := c.ValidateConcentrator(); err != nil {
		t.Errorf("ValidateConcentrator: %v", err)
	}
	if o := c.Ordered(); o[0].Name != "fiber" || o[1].Name != "wifi" || o[2].Name != "lte" {
		t.Errorf("Ordered = %v %v %v", o[0].Name, o[1].Name, o[2].Name)
	}
}

// Every bad field is reported by its JSON path.
func TestBadFieldsAreNamed(t *testing.T) {
	for _, tc := range []struct {
		name, from, to, field string
	}{
		{"missing concentrator", `"endpoint": "198.51.100.2",`, `"endpoint": "",`, "concentrator.endpoint"},
		{"bad concentrator key", `"public_key": "yusZzK+0TjyZUHy6+k78yah3nYB9pT55LnWTYz8dGkk="`, `"public_key": "not-a-key"`, "concentrator.public_key"},
		{"port clash", `"port": 51821`, `"port": 51820`, "uplinks[1].wireguard.port"},
		{"port range", `"port": 51822`, `"port": 70000`, "uplinks[2].wireguard.port"},
		{"bad device", `"device": "wifi0"`, `"device": "this-name-is-far-too-long"`, "uplinks[1].device"},
		{"duplicate device", `"device": "wwan0"`, `"device": "fiber0"`, "uplinks[2].device"},
		{"bad role", `"role": "backup"`, `"role": "spare"`, "uplinks[2].role"},
		{"bad uplink key", `"public_key": "CQxZ9zbAKUHflfqKQ2w1AlmkLtPMGyAn4hCk7TXacjk="`, `"public_key": "AAAA"`, "uplinks[2].wireguard.public_key"},
		{"bad tunnel address", `"address": "10.55.2.2/24"`, `"address": "10.55.2.300/24"`, "uplinks[1].wireguard.address"},
		{"peer outside prefix", `"peer_address": "10.55.3.1"`, `"peer_address": "10.99.3.1"`, "uplinks[2].wireguard.peer_address"},
		{"modem on unknown uplink", `"uplink": "lte"`, `"uplink": "5g"`, "modem.uplink"},
		{"metrics listen", `"metrics_listen": "127.0.0.1:9120"`, `"metrics_listen": "everywhere"`, "metrics_listen"},
		{"no primary", `"role": "primary", "priority": 300`, `"role": "backup", "priority": 300`, ""},
		{"bad duration", `"hold_down": "500ms"`, `"hold_down": "soon"`, "failover.hold_down"},
		{"backup initcwnd", `"hold_down": "500ms"`, `"hold_down": "500ms", "backup_initcwnd": -3`, "failover.backup_initcwnd"},
		{"unknown nudge", `"hold_down": "500ms"`, `"hold_down": "500ms", "nudge": "sometimes"`, "failover.nudge"},
		{"nudge contradiction", `"hold_down": "500ms"`, `"hold_down": "500ms", "nudge": "on", "no_nudge": true`, "failover.no_nudge"},
		{"max sndbuf", `"hold_down": "500ms"`, `"hold_down": "500ms", "max_sndbuf": 1000`, "failover.max_sndbuf"},
		{"min rcvbuf", `"hold_down": "500ms"`, `"hold_down": "500ms", "min_rcvbuf": 1000`, "failover.min_rcvbuf"},
		{"sqm min above max", `"min": "2mbit"`, `"min": "90mbit"`, "uplinks[2].sqm.egress.autorate.min"},
		{"sqm unknown diffserv", `"ingress": {"bandwidth": "209mbit", "diffserv": "diffserv4"}`, `"ingress": {"bandwidth": "209mbit", "diffserv": "diffserv5"}`, "uplinks[0].sqm.ingress.diffserv"},
		{"sqm zero rate", `"bandwidth": "209mbit", "diffserv": "diffserv4", "ack_filter": true`, `"bandwidth": "0mbit", "diffserv": "diffserv4", "ack_filter": true`, "uplinks[0].sqm.egress.bandwidth"},
		{"vlan out of range", `"gateway": "100.64.2.1",`, `"ethernet": {"dhcp": true, "vlan": 5000},`, "uplinks[1].ethernet.vlan"},
		{"sae password too short", `"gateway": "100.64.2.1",`, `"wifi": {"ssid": "backhaul", "password": "short"},`, "uplinks[1].wifi.password"},
		{"unknown band", `"gateway": "100.64.2.1",`, `"wifi": {"ssid": "backhaul", "password": "long enough pass", "bands": ["6", "60"]},`, "uplinks[1].wifi.bands[1]"},
		{"unknown field", `"probe_port": 7,`, `"probe_prot": 7,`, "probe_prot"},
		{"wrong type", `"priority": 200`, `"priority": "high"`, "uplinks.priority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := string(example(t))
			if !strings.Contains(src, tc.from) {
				t.Fatalf("fixture lacks %q", tc.from)
			}
			src = strings.Replace(src, tc.from, tc.to, 1)
			if tc.name == "no primary" {
				src = strings.Replace(src, `"role": "primary", "priority": 200`, `"role": "backup", "priority": 200`, 1)
			}
			_, err := Parse([]byte(src))
			if err == nil {
				t.Fatal("Parse accepted a bad config")
			}
			want := tc.field
			if want == "" {
				want = "uplinks"
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %q", err, want)
			}
			var fe *FieldError
			if tc.name != "unknown field" && tc.name != "bad duration" && tc.name != "wrong type" && !errors.As(err, &fe) {
				t.Errorf("error %q is not a *FieldError", err)
			}
		})
	}
}

func TestSyntaxErrorNamesLine(t *testing.T) {
	_, err := Parse([]byte("{\n\"state_dir\": \"/x\",\n\"uplinks\": [,]\n}"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("err = %v, want it to name line 3", err)
	}
}

func TestRouterNeedsKeys(t *testing.T) {
	src := strings.Replace(string(example(t)), `"private_key_file": "/perm/lifeline/wg-lte.key",`, ``, 1)
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateRouter(); err == nil || !strings.Contains(err.Error(), "uplinks[2].wireguard.private_key_file") {
		t.Fatalf("ValidateRouter = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("testdata/example.json")
	f.Add(b)
	f.Add([]byte(`{"uplinks":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && (c == nil || len(c.Uplinks) == 0) {
			t.Fatalf("accepted config without uplinks")
		}
	})
}

func TestRcvbufFloor(t *testing.T) {
	for _, tc := range []struct {
		name           string
		sndbuf, rcvbuf int
		want           string
	}{
		{"twice the send-buffer cap", 784 << 10, 0, "4096 1605632 6291456"},
		{"the floor", 256 << 10, 0, "4096 524288 6291456"},
		{"the ceiling (no SQM: the kernel's 4 MiB send buffer)", 0, 0, "4096 4194304 6291456"},
		{"explicit wins, the maximum follows it", 0, 8 << 20, "4096 8388608 8388608"},
	} {
		c := &Config{Failover: Failover{MaxSndbuf: tc.sndbuf, MinRcvbuf: tc.rcvbuf}}
		if got := c.TCPRmem(); got != tc.want {
			t.Errorf("%s: TCPRmem() = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSndbufCap(t *testing.T) {
	rate := func(bps uint64, autorateMax uint64) *sqm.UplinkConfig {
		d := &sqm.DirectionConfig{Bandwidth: sqm.Rate(bps)}
		if autorateMax > 0 {
			d.Autorate = &sqm.AutorateConfig{Enabled: true, Min: sqm.Rate(bps / 2), Max: sqm.Rate(autorateMax)}
		}
		return &sqm.UplinkConfig{Egress: d}
	}
	for _, tc := range []struct {
		name  string
		fixed int
		sqms  []*sqm.UplinkConfig
		want  int
	}{
		{"no SQM: the kernel's", 0, []*sqm.UplinkConfig{nil, nil}, KernelSndbuf},
		{"explicit wins", 512 << 10, []*sqm.UplinkConfig{rate(209e6, 0)}, 512 << 10},
		{"seed's fiber: 30 ms at 209 Mbit/s", 0, []*sqm.UplinkConfig{rate(209e6, 0), rate(19e6, 0)}, 783750},
		{"slow paths: the floor", 0, []*sqm.UplinkConfig{rate(38e6, 0), nil}, MinSndbufCap},
		{"autorate's maximum counts", 0, []*sqm.UplinkConfig{rate(40e6, 300e6)}, 1125000},
		{"very fast: the kernel's cap", 0, []*sqm.UplinkConfig{rate(10e9, 0)}, KernelSndbuf},
	} {
		c := &Config{Failover: Failover{MaxSndbuf: tc.fixed}}
		for _, q := range tc.sqms {
			c.Uplinks = append(c.Uplinks, Uplink{SQM: q})
		}
		if got := c.SndbufCap(); got != tc.want {
			t.Errorf("%s: SndbufCap() = %d, want %d", tc.name, got, tc.want)
		}
	}
}
