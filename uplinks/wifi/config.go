// Package wifi is the WiFi 6E client uplink. It drives wpa_supplicant
// through its control socket instead of being a supplicant: SAE, H2E, PMF
// and roaming are wpa_supplicant's decades of work, and the kernel's
// nl80211 interface changes under it, not under us.
//
// The package generates wpa_supplicant's configuration from ours (WPA3-SAE
// or OWE — 6 GHz allows nothing weaker), starts and supervises the
// process, follows its events (connected, disconnected, roam, signal),
// polls signal and link rate, steers toward the preferred band, and runs
// the ethernet package's DHCP and routing on the interface once
// associated. Weak signal is a reason to demote the uplink (SignalPolicy),
// like the LTE RSSI rule.
package wifi

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lifeline-router/lifeline/uplinks/ethernet"
)

// Duration is a time.Duration that reads and writes as "10s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("string %q", s), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Security modes. 6 GHz requires one of these (no WPA2-PSK, no open).
const (
	SecuritySAE = "sae" // WPA3-Personal
	SecurityOWE = "owe" // Enhanced Open
)

// Band names as written in the config.
const (
	Band6   = "6"
	Band5   = "5"
	Band2_4 = "2.4"
)

// Config is the WiFi uplink.
//
//	{"ssid": "backhaul", "security": "sae", "password_file": "/perm/wifi.psk",
//	 "bands": ["6", "5"], "country": "DE", "demote_signal_dbm": -75}
type Config struct {
	SSID string `json:"ssid"`
	// Security is "sae" (default) or "owe".
	Security string `json:"security,omitempty"`
	// Password for SAE, 8..63 characters (or PasswordFile, first line).
	Password     string `json:"password,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	// Bands allowed, in order of preference; default ["6", "5", "2.4"].
	Bands []string `json:"bands,omitempty"`
	// BSSID pins one access point ("02:00:00:00:01:00").
	BSSID string `json:"bssid,omitempty"`
	// Country is the regulatory domain (ISO 3166 alpha-2). 6 GHz is only
	// usable once the kernel knows a country that allows it.
	Country string `json:"country,omitempty"`
	// Hidden makes wpa_supplicant probe for the SSID.
	Hidden bool `json:"hidden,omitempty"`

	// Supplicant is the wpa_supplicant binary (default: found in PATH,
	// /usr/sbin or /user on gokrazy). Driver is its -D (default nl80211).
	Supplicant string `json:"wpa_supplicant,omitempty"`
	Driver     string `json:"driver,omitempty"`

	// Demote the uplink when the signal stays below DemoteSignal (dBm)
	// for DemoteHold; restore above DemoteSignal+Hysteresis for
	// DemoteHold. Defaults -75 dBm, 5 dB, 10s.
	DemoteDisabled bool     `json:"demote_disabled,omitempty"`
	DemoteSignal   float64  `json:"demote_signal_dbm,omitempty"`
	Hysteresis     float64  `json:"hysteresis_db,omitempty"`
	DemoteHold     Duration `json:"demote_hold,omitempty"`
	// PollInterval for SIGNAL_POLL (default 2s).
	PollInterval Duration `json:"poll_interval,omitempty"`

	// IP is the addressing once associated (default {"dhcp": true}).
	IP *ethernet.Config `json:"ip,omitempty"`
}

// normBand accepts "6", "6ghz", "6GHz", "6 GHz" etc.
func normBand(s string) (string, bool) {
	t := strings.ToLower(strings.ReplaceAll(s, " ", ""))
	t = strings.TrimSuffix(t, "ghz")
	switch t {
	case "6", "5", "2.4":
		return t, true
	case "2", "24":
		return Band2_4, true
	}
	return "", false
}

// Validate checks the config completely and names the field at fault.
// The password file is read (and checked) when the manager starts.
func (c *Config) Validate() error {
	if n := len(c.SSID); n == 0 || n > 32 {
		return fmt.Errorf("ssid: %d bytes, want 1..32", n)
	}
	switch c.Security {
	case "", SecuritySAE:
		if c.Password == "" && c.PasswordFile == "" {
			return fmt.Errorf("password: required for security %q (or password_file)", SecuritySAE)
		}
		if c.Password != "" && c.PasswordFile != "" {
			return fmt.Errorf("password_file: set together with password; choose one")
		}
		if c.Password != "" {
			if err := CheckPassword(c.Password); err != nil {
				return fmt.Errorf("password: %w", err)
			}
		}
	case SecurityOWE:
		if c.Password != "" || c.PasswordFile != "" {
			return fmt.Errorf("password: not used with security %q (Enhanced Open has none)", SecurityOWE)
		}
	default:
		return fmt.Errorf("security: unknown %q (want %q or %q; 6 GHz allows nothing weaker)", c.Security, SecuritySAE, SecurityOWE)
	}
	seen := map[string]bool{}
	for i, b := range c.Bands {
		n, ok := normBand(b)
		if !ok {
			return fmt.Errorf("bands[%d]: unknown band %q (want \"6\", \"5\" or \"2.4\")", i, b)
		}
		if seen[n] {
			return fmt.Errorf("bands[%d]: band %q listed twice", i, b)
		}
		seen[n] = true
	}
	if c.BSSID != "" {
		if _, err := parseBSSID(c.BSSID); err != nil {
			return fmt.Errorf("bssid: %w", err)
		}
	}
	if c.Country != "" && (len(c.Country) != 2 || strings.ToUpper(c.Country) != c.Country ||
		c.Country[0] < 'A' || c.Country[0] > 'Z' || c.Country[1] < 'A' || c.Country[1] > 'Z') {
		return fmt.Errorf("country: %q is not an ISO 3166 alpha-2 code like \"DE\"", c.Country)
	}
	if c.Driver != "" && !slices.Contains([]string{"nl80211", "wext", "wired"}, c.Driver) {
		return fmt.Errorf("driver: unknown %q (nl80211)", c.Driver)
	}
	if c.DemoteSignal != 0 && (c.DemoteSignal < -100 || c.DemoteSignal > -20) {
		return fmt.Errorf("demote_signal_dbm: %v outside -100..-20", c.DemoteSignal)
	}
	if c.Hysteresis < 0 || c.Hysteresis > 30 {
		return fmt.Errorf("hysteresis_db: %v outside 0..30", c.Hysteresis)
	}
	if c.PollInterval != 0 && c.PollInterval.D() < 100*time.Millisecond {
		return fmt.Errorf("poll_interval: %v below 100ms", c.PollInterval.D())
	}
	if c.IP != nil {
		if c.IP.VLAN != 0 {
			return fmt.Errorf("ip.vlan: VLANs are not used on a WiFi uplink")
		}
		if err := c.IP.Validate(); err != nil {
			return fmt.Errorf("ip.%w", err)
		}
	}
	return nil
}

// CheckPassword applies our SAE password rule: 8..63 characters, no
// control characters. SAE itself takes any length, but we keep WPA2-PSK's
// 8..63 so one passphrase works on transition-mode APs (hostapd refuses a
// shorter wpa_passphrase) and a typo'd short password fails here rather
// than as a silent auth failure; control characters could break out of the
// generated wpa_supplicant line.
func CheckPassword(p string) error {
	if !utf8.ValidString(p) {
		return fmt.Errorf("not valid UTF-8")
	}
	n := utf8.RuneCountInString(p)
	if n < 8 {
		return fmt.Errorf("SAE password too short: %d characters, want at least 8", n)
	}
	if n > 63 {
		return fmt.Errorf("SAE password too long: %d characters, want at most 63", n)
	}
	for i, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("control character at byte %d", i)
		}
	}
	return nil
}

func parseBSSID(s string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("%q is not a MAC address like 02:00:00:00:01:00", s)
	}
	if hw[0]&1 != 0 {
		return nil, fmt.Errorf("%q is a multicast address", s)
	}
	if string(hw) == string(make([]byte, 6)) {
		return nil, fmt.Errorf("%q is the zero address", s)
	}
	return hw, nil
}

// bands returns the normalised preference list.
func (c *Config) bands() []string {
	if len(c.Bands) == 0 {
		return []string{Band6, Band5, Band2_4}
	}
	out := make([]string, len(c.Bands))
	for i, b := range c.Bands {
		out[i], _ = normBand(b)
	}
	return out
}

// BandOf maps a frequency (MHz) to its band name ("" if none).
func BandOf(mhz int) string {
	switch {
	case mhz >= 2400 && mhz < 2500:
		return Band2_4
	case mhz >= 5150 && mhz < 5925:
		return Band5
	case mhz >= 5925 && mhz <= 7125:
		return Band6
	}
	return ""
}

// channels lists each band's 20 MHz channel centres (MHz).
func channels(band string) []int {
	var f []int
	switch band {
	case Band2_4:
		for m := 2412; m <= 2472; m += 5 {
			f = append(f, m)
		}
		f = append(f, 2484)
	case Band5:
		// Channel n is at 5000+5n MHz: 36..144 and 149..177, every 4th.
		for ch := 36; ch <= 177; ch += 4 {
			if ch == 148 {
				ch = 149
			}
			f = append(f, 5000+5*ch)
		}
	case Band6:
		f = append(f, 5935) // channel 2
		for m := 5955; m <= 7115; m += 20 {
			f = append(f, m)
		}
	}
	return f
}

func (c *Config) security() string {
	if c.Security == "" {
		return SecuritySAE
	}
	return c.Security
}

// SupplicantConfig renders wpa_supplicant.conf. password is the SAE
// password (read from PasswordFile by the caller when used).
func (c *Config) SupplicantConfig(ctrlDir, password string) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.security() == SecuritySAE {
		if err := CheckPassword(password); err != nil {
			return nil, fmt.Errorf("password: %w", err)
		}
	}
	if strings.ContainsAny(ctrlDir, "\n\r") {
		return nil, fmt.Errorf("control directory %q contains a newline", ctrlDir)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# generated by lifeline from its config; edits are overwritten")
	w("ctrl_interface=%s", ctrlDir)
	w("update_config=0")
	if c.Country != "" {
		w("country=%s", c.Country)
	}
	// H2E and hunting-and-pecking: 6 GHz APs require H2E, older 5 GHz
	// ones may only do hunting-and-pecking.
	w("sae_pwe=2")
	w("network={")
	// Hex SSID: no quoting questions for any byte.
	w("\tssid=%s", hex.EncodeToString([]byte(c.SSID)))
	if c.Hidden {
		w("\tscan_ssid=1")
	}
	switch c.security() {
	case SecuritySAE:
		w("\tkey_mgmt=SAE")
		// wpa_supplicant takes the text between the first and the last
		// quote, so quotes inside are fine; newlines were rejected.
		w("\tsae_password=\"%s\"", password)
	case SecurityOWE:
		w("\tkey_mgmt=OWE")
	}
	w("\tproto=RSN")
	w("\tieee80211w=2") // PMF required: mandatory for SAE/OWE on 6 GHz
	if c.BSSID != "" {
		hw, _ := parseBSSID(c.BSSID)
		w("\tbssid=%s", hw)
	}
	if bs := c.bands(); len(bs) < 3 {
		var f []string
		for _, band := range bs {
			for _, m := range channels(band) {
				f = append(f, fmt.Sprint(m))
			}
		}
		w("\tfreq_list=%s", strings.Join(f, " "))
	}
	// Scan in the background when the signal sinks, so a better AP or
	// band is known before the link is lost.
	w("\tbgscan=\"simple:30:-70:3600\"")
	w("}")
	return []byte(b.String()), nil
}
