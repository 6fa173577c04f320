package wifi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/lifeline-router/lifeline/uplinks/ethernet"
)

func TestValidate(t *testing.T) {
	ok := Config{SSID: "backhaul", Password: "correct horse"}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want string // "" valid, else error prefix
	}{
		{"minimal sae", func(c *Config) {}, ""},
		{"owe", func(c *Config) { c.Security, c.Password = "owe", "" }, ""},
		{"bands", func(c *Config) { c.Bands = []string{"6GHz", "5", "2.4 GHz"} }, ""},
		{"bssid", func(c *Config) { c.BSSID = "02:00:00:00:01:00" }, ""},
		{"password file", func(c *Config) { c.Password, c.PasswordFile = "", "/perm/wifi.psk" }, ""},
		{"short password", func(c *Config) { c.Password = "short" }, "password: SAE password too short: 5 characters, want at least 8"},
		{"long password", func(c *Config) { c.Password = strings.Repeat("x", 64) }, "password: SAE password too long"},
		{"newline in password", func(c *Config) { c.Password = "abcdefgh\nnetwork={" }, "password: control character"},
		{"no password", func(c *Config) { c.Password = "" }, "password: required"},
		{"owe with password", func(c *Config) { c.Security = "owe" }, "password: not used"},
		{"psk", func(c *Config) { c.Security = "wpa2" }, `security: unknown "wpa2"`},
		{"unknown band", func(c *Config) { c.Bands = []string{"6", "60"} }, `bands[1]: unknown band "60"`},
		{"duplicate band", func(c *Config) { c.Bands = []string{"5", "5GHz"} }, "bands[1]: band"},
		{"bad bssid", func(c *Config) { c.BSSID = "02:00:00:00:01" }, "bssid: "},
		{"multicast bssid", func(c *Config) { c.BSSID = "01:00:5e:00:00:01" }, "bssid: "},
		{"empty ssid", func(c *Config) { c.SSID = "" }, "ssid: 0 bytes"},
		{"long ssid", func(c *Config) { c.SSID = strings.Repeat("s", 33) }, "ssid: 33 bytes"},
		{"country", func(c *Config) { c.Country = "de" }, "country: "},
		{"threshold", func(c *Config) { c.DemoteSignal = 10 }, "demote_signal_dbm: "},
		{"ip vlan", func(c *Config) { c.IP = &ethernet.Config{DHCP: true, VLAN: 7} }, "ip.vlan: "},
		{"ip bad", func(c *Config) { c.IP = &ethernet.Config{Address: "10.0.0.1"} }, "ip.address: "},
	} {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want prefix %q", tc.name, err, tc.want)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	var c Config
	d := json.NewDecoder(strings.NewReader(`{"ssid":"backhaul","security":"sae","password":"correct horse",
		"bands":["6","5"],"bssid":"02:00:00:00:01:00","country":"DE","demote_signal_dbm":-72,"demote_hold":"15s",
		"ip":{"dhcp":true,"hostname":"lifeline"}}`))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.DemoteHold.D().Seconds() != 15 || c.IP == nil || !c.IP.DHCP {
		t.Errorf("decoded %+v", c)
	}
	if err := json.Unmarshal([]byte(`{"demote_hold":"soon"}`), &c); err == nil || !strings.Contains(err.Error(), "demote_hold") {
		t.Errorf("bad duration: %v", err)
	}
}

func TestSupplicantConfig(t *testing.T) {
	c := Config{SSID: "back\"haul", Password: `pa"ss word`, Bands: []string{"6", "5"}, BSSID: "02:00:00:00:01:00", Country: "DE", Hidden: true}
	b, err := c.SupplicantConfig("/run/lifeline/wpa", c.Password)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		"ctrl_interface=/run/lifeline/wpa\n", "country=DE\n", "sae_pwe=2\n",
		"\tssid=6261636b226861756c\n",
		"\tscan_ssid=1\n", "\tkey_mgmt=SAE\n", "\tsae_password=\"pa\"ss word\"\n", "\tieee80211w=2\n",
		"\tbssid=02:00:00:00:01:00\n", "\tfreq_list=5935 5955 ", " 7115 5180 ", " 5885\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("config lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, " 2412") {
		t.Errorf("2.4 GHz not allowed but in freq_list:\n%s", s)
	}
	// All bands: no freq_list at all (wpa_supplicant scans everything).
	c = Config{SSID: "x", Security: "owe"}
	b, err = c.SupplicantConfig("/run/x", "")
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, "freq_list") || !strings.Contains(s, "key_mgmt=OWE") || strings.Contains(s, "sae_password") {
		t.Errorf("owe config:\n%s", s)
	}
	if _, err := (&Config{SSID: "x", PasswordFile: "/f"}).SupplicantConfig("/run/x", "short"); err == nil {
		t.Error("short password from file accepted")
	}
}

func TestBandOf(t *testing.T) {
	for mhz, want := range map[int]string{2412: "2.4", 2484: "2.4", 5180: "5", 5885: "5", 5935: "6", 5955: "6", 7115: "6", 900: ""} {
		if got := BandOf(mhz); got != want {
			t.Errorf("BandOf(%d) = %q, want %q", mhz, got, want)
		}
	}
	for _, b := range []string{"2.4", "5", "6"} {
		for _, f := range channels(b) {
			if BandOf(f) != b {
				t.Errorf("channel %d of band %s maps to %q", f, b, BandOf(f))
			}
		}
	}
}
