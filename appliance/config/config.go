// Package config is the one declarative description of a Lifeline deployment.
//
// The router (bin/lifeline run) and the concentrator (bin/lifeline
// concentrator) read the same file format, so that a user keeps both ends of
// every tunnel in one place and a port or address can never disagree between
// them. Each side uses the fields it needs and ignores the other side's keys.
//
// Validation happens completely before anything is applied: a config with a
// bad field is rejected with an error naming that field, and the supervisor
// never half-applies it.
package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/lifeline-router/lifeline/sqm"
	"github.com/lifeline-router/lifeline/uplinks/ethernet"
	"github.com/lifeline-router/lifeline/uplinks/wifi"
)

// Duration is a time.Duration that reads and writes as "5ms" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"5ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		// An UnmarshalTypeError gets the field path filled in by
		// encoding/json, so the user learns which duration is bad.
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("string %q", s), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is the whole file.
type Config struct {
	// StateDir holds leases, adopted state and generated files. On gokrazy
	// this lives under /perm so it survives updates.
	StateDir string `json:"state_dir,omitempty"`
	// MetricsListen is where /metrics, /healthz and /status are served. It
	// must not be reachable from an uplink: the default is loopback only.
	MetricsListen string `json:"metrics_listen,omitempty"`

	Concentrator Concentrator `json:"concentrator"`
	MPTCP        MPTCP        `json:"mptcp"`
	Failover     Failover     `json:"failover"`
	Uplinks      []Uplink     `json:"uplinks"`
	Modem        *Modem       `json:"modem,omitempty"`
}

// Concentrator describes the server end: one WireGuard listener per uplink
// path on a VPS.
type Concentrator struct {
	// Endpoint is the concentrator's public address as the router dials it.
	Endpoint string `json:"endpoint"`
	// PublicKey is the concentrator's WireGuard public key (router side).
	PublicKey string `json:"public_key"`
	// PrivateKeyFile is used only when running as the concentrator.
	PrivateKeyFile string `json:"private_key_file,omitempty"`
	// ServiceAddress is the address behind every tunnel that MPTCP
	// connections are made to; all subflows reach it.
	ServiceAddress string `json:"service_address"`
	// ProbePort is the UDP echo port the concentrator answers on every
	// tunnel address, for the router's in-tunnel health probes.
	ProbePort int `json:"probe_port,omitempty"`
	// Egress is the concentrator's internet-facing device for NAT
	// (empty: no NAT, e.g. in the lab).
	Egress string `json:"egress,omitempty"`
}

// MPTCP holds the kernel path manager's limits.
type MPTCP struct {
	Subflows        uint32 `json:"subflows,omitempty"`
	AddAddrAccepted uint32 `json:"add_addr_accepted,omitempty"`
}

// Failover tunes the health probes and the failover policy.
type Failover struct {
	// ProbeInterval for primary uplinks; a few ms so a silent blackhole is
	// seen within a few RTTs.
	ProbeInterval Duration `json:"probe_interval,omitempty"`
	// BackupProbeInterval is sparse, to respect LTE data caps.
	BackupProbeInterval Duration `json:"backup_probe_interval,omitempty"`
	// MinTimeout is the floor of the RTT-derived probe timeout.
	MinTimeout Duration `json:"min_timeout,omitempty"`
	// HoldDown is how long a recovered uplink must stay healthy before
	// traffic moves back to it.
	HoldDown Duration `json:"hold_down,omitempty"`
	// NoNudge turns off the DATA_ACK nudge: before a dead primary's
	// endpoint is removed, the router asks the concentrator, through the
	// surviving tunnel, to send a fresh DATA_ACK on every subflow, so the
	// kernel's re-injection starts where the receiver's data really ends.
	//
	// Deprecated: "nudge": "off" says the same; no_nudge: true still means it.
	NoNudge bool `json:"no_nudge,omitempty"`
	// Nudge is "auto" (the default), "on" or "off". Auto nudges unless the
	// kernel re-injects at the surviving subflow's pace (our board
	// kernel's net.mptcp.reinject_limit 1 to 4, board/amd64/patches): there the
	// kernel learns the receiver's hole from the backup's first ACK by
	// itself, and waiting a round trip for the nudge first only delays
	// the re-injection (VM lab, 3 cut trials per arm: p50 32.3 ms without
	// the nudge, 121.4 ms with it; build/bench/reinjection-nudge.json).
	Nudge string `json:"nudge,omitempty"`
	// BackupInitCwnd is the initial congestion window (segments) both ends
	// put on the routes into a backup uplink's tunnel; default 32, and 10
	// is the kernel's own. A backup subflow idles until a failover, so it
	// starts re-sending the dead path's unacknowledged data with its
	// initial window: with 10 segments the hole behind that data waits for
	// a second round trip on the backup (a cut stalled 63.6 ms at p50 in
	// the VM lab, 38.7 ms with 32). 32 segments (46 KB) cover what a shaped
	// primary has in flight, and CAKE on the backup paces them.
	BackupInitCwnd int `json:"backup_initcwnd,omitempty"`
	// MaxSndbuf caps, in bytes, the send buffer the kernel autotunes for
	// each TCP socket on this end (the maximum of net.ipv4.tcp_wmem), so
	// for every MPTCP subflow. 0 (the default) derives it from the
	// uplinks' SQM rates, see SndbufCap. MPTCP hands data to a subflow
	// until its send buffer is full and makes subflows ignore
	// tcp_notsent_lowat, so while LTE carries the upload its subflow
	// queues what the buffer holds: in the VM lab 1.3 MB, 0.6 s of LTE
	// that the receiver has to wait for after the fiber is back (fail-back
	// 1.18-1.20 s after a blackhole; 0.64 s with 256 KiB, 0.72 s with 512
	// KiB). The buffer must still hold the fastest path's congestion
	// window: in the host lab's 220 Mbit/s fiber, whose RTT swells under
	// load, 384 KiB cost 6 % of its goodput and the fail-back.
	MaxSndbuf int `json:"max_sndbuf,omitempty"`
	// MinRcvbuf is, in bytes, the receive buffer every new TCP socket on
	// this end starts with (the middle value of net.ipv4.tcp_rmem); 0 (the
	// default) derives it, see RcvbufFloor. Why: MPTCP autotunes the
	// receive buffer of the whole connection and hands the new size to the
	// subflows only when it grows (mptcp_rcv_space_adjust). A subflow that
	// joins after that has settled, as the primary's does at every
	// fail-back, keeps tcp_rmem's 128 KiB and its window stays near 75 KB:
	// in the host lab the restored 220 Mbit/s fiber then carried 75-88
	// Mbit/s for as long as the upload lasted (snd_wnd 76800 in `ss -ti`,
	// the concentrator's subflow at rb131072), in about a third of the
	// restores.
	MinRcvbuf int `json:"min_rcvbuf,omitempty"`
	// KeepBackupBacklog turns off the fail-back flush: when a primary
	// comes back, the supervisor removes and re-adds the backup's endpoint
	// once the primary's subflow is up, so that what the backup's subflow
	// still has queued is re-sent on the primary (the kernel re-injects a
	// closing subflow's data on the others) instead of trickling out at
	// LTE rate while the receiver waits for it in order.
	KeepBackupBacklog bool `json:"keep_backup_backlog,omitempty"`
}

// The values of Failover.Nudge.
const (
	NudgeAuto = "auto"
	NudgeOn   = "on"
	NudgeOff  = "off"
)

// The bounds of the derived send-buffer cap; KernelSndbuf is the kernel's
// own default maximum, what a config without SQM rates keeps.
// MaxSndbufMin and MaxSndbufMax bound failover.max_sndbuf when it is set.
const (
	MinSndbufCap = 256 << 10
	KernelSndbuf = 4 << 20
	MaxSndbufMin = 64 << 10
	MaxSndbufMax = 64 << 20
)

// SndbufCap is the send-buffer cap this end applies: failover.max_sndbuf
// when set, else 30 ms at the fastest shaped rate of any uplink (either
// direction, autorate's maximum included), within 256 KiB and the kernel's
// 4 MiB. 30 ms: BBR keeps about twice the bandwidth-delay product in
// flight, and a shaped path's delay is its RTT plus CAKE's 5 ms target,
// so 2 × (5 + 5) ms, plus 10 ms queued to keep it fed. 209 Mbit/s (the
// seed's fiber at 95 %) gives 784 KB, the VM lab's 38 Mbit/s the 256 KiB
// floor. Without SQM rates nothing says how fast a path is, and the
// kernel's default stays.
func (c *Config) SndbufCap() int {
	if c.Failover.MaxSndbuf > 0 {
		return c.Failover.MaxSndbuf
	}
	var top uint64
	for _, u := range c.Uplinks {
		if u.SQM != nil {
			top = max(top, u.SQM.TopRate())
		}
	}
	if top == 0 {
		return KernelSndbuf
	}
	return SndbufFor(top)
}

// SndbufFor is the derived send-buffer cap for a fastest path of bps
// bit/s (see SndbufCap): for a lab whose own shaper stands in for SQM.
func SndbufFor(bps uint64) int {
	return int(min(max(bps/8*30/1000, MinSndbufCap), KernelSndbuf))
}

// The bounds of the derived receive-buffer floor, of failover.min_rcvbuf
// when set, and the kernel's default maximum of net.ipv4.tcp_rmem.
const (
	MinRcvbufFloor = 512 << 10
	MaxRcvbufFloor = 4 << 20
	MinRcvbufMin   = 64 << 10
	MinRcvbufMax   = 64 << 20
	KernelRmemMax  = 6 << 20
)

// RcvbufFloor is the receive buffer new TCP sockets start with on this
// end: failover.min_rcvbuf when set, else twice SndbufCap within 512 KiB
// and 4 MiB. A subflow's window is about half its receive buffer, and it
// must hold what the fastest path has in flight, which is what SndbufCap
// sizes the send side for. The memory is a bound, not an allocation:
// sockets whose reader keeps up never fill it.
func (c *Config) RcvbufFloor() int {
	if c.Failover.MinRcvbuf > 0 {
		return c.Failover.MinRcvbuf
	}
	return min(max(2*c.SndbufCap(), MinRcvbufFloor), MaxRcvbufFloor)
}

// TCPRmem is the net.ipv4.tcp_rmem value that applies RcvbufFloor: the
// kernel's minimum, our initial size, and the kernel's default maximum
// (or the floor, if that is larger) for autotuning to grow into.
func (c *Config) TCPRmem() string {
	f := c.RcvbufFloor()
	return fmt.Sprintf("4096 %d %d", f, max(f, KernelRmemMax))
}

// TCPWmem is the net.ipv4.tcp_wmem value that applies SndbufCap: the
// kernel's own minimum and initial size, our maximum.
func (c *Config) TCPWmem() string {
	return fmt.Sprintf("4096 16384 %d", c.SndbufCap())
}

// BufferSysctls are the socket-buffer sysctls (paths under /proc/sys)
// both ends apply: the send-buffer cap (TCPWmem) and the receive-buffer
// floor (TCPRmem). Both are per network namespace, so they reach every
// TCP socket of that end, MPTCP subflows included: the router's for
// uploads, the concentrator's for downloads.
func (c *Config) BufferSysctls() map[string]string {
	return map[string]string{"net/ipv4/tcp_wmem": c.TCPWmem(), "net/ipv4/tcp_rmem": c.TCPRmem()}
}

// Role says whether an uplink carries traffic normally or only on failure.
type Role string

const (
	RolePrimary Role = "primary"
	RoleBackup  Role = "backup"
)

// InitCwnd is the initial window for routes into u's tunnel; 0 keeps the
// kernel's default.
func (f Failover) InitCwnd(u Uplink) int {
	if u.Role == RoleBackup {
		return f.BackupInitCwnd
	}
	return 0
}

// Uplink is one way out of the router, with its own tunnel.
type Uplink struct {
	Name     string `json:"name"`
	Device   string `json:"device"`
	Kind     string `json:"kind,omitempty"` // fiber, wifi, lte (informational, default by name)
	Role     Role   `json:"role"`
	Priority int    `json:"priority"`
	// Gateway on the uplink's network (static). Empty means a
	// point-to-point link (wwan0) or one learnt by DHCP.
	Gateway string `json:"gateway,omitempty"`
	// Address is a static address for the uplink device itself (optional).
	Address string `json:"address,omitempty"`

	WireGuard WireGuard `json:"wireguard"`
	// SQM shapes this uplink with CAKE (egress, and ingress via IFB),
	// optionally retuned by the autorate controller.
	SQM *sqm.UplinkConfig `json:"sqm,omitempty"`
	// Ethernet addresses a wired uplink by DHCP or statically (optionally
	// on a VLAN); without it (and without WiFi) the device is expected to
	// be addressed already, and Gateway names the next hop.
	Ethernet *ethernet.Config `json:"ethernet,omitempty"`
	// WiFi makes the uplink a WPA3 client (wpa_supplicant) with its own
	// addressing.
	WiFi *wifi.Config `json:"wifi,omitempty"`
}

// Managed reports whether a link manager (DHCP, static, WiFi) owns the
// uplink's address and its default route.
func (u Uplink) Managed() bool { return u.Ethernet != nil || u.WiFi != nil }

// WireGuard is one tunnel: the router's end and the concentrator's end.
type WireGuard struct {
	// Interface name on the router (≤15 chars, unique across namespaces
	// because wireguard-go's UAPI sockets are shared).
	Interface string `json:"interface"`
	// ConcentratorInterface is the name of this path's listener on the
	// concentrator.
	ConcentratorInterface string `json:"concentrator_interface,omitempty"`
	PrivateKeyFile        string `json:"private_key_file,omitempty"`
	// PublicKey of the router's end, used by the concentrator.
	PublicKey string `json:"public_key,omitempty"`
	// Port is the concentrator's UDP port for this path; every path has its
	// own so firewalls and the router's policy routing can tell them apart.
	Port int `json:"port"`
	// Endpoint overrides the concentrator endpoint for this path
	// ("host:port"), e.g. when a path reaches it through a relay.
	Endpoint string `json:"endpoint,omitempty"`
	// Address is the router's tunnel address with prefix, e.g. 10.55.1.2/24;
	// the MPTCP endpoint is put on it.
	Address string `json:"address"`
	// PeerAddress is the concentrator's address in this tunnel (probes).
	PeerAddress string   `json:"peer_address"`
	MTU         int      `json:"mtu,omitempty"`
	Keepalive   Duration `json:"keepalive,omitempty"`
}

// Modem configures the LTE/5G modem on the backup uplink.
type Modem struct {
	Port     string `json:"port"`
	Uplink   string `json:"uplink"` // name of the uplink the modem serves
	APN      string `json:"apn,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	PIN      string `json:"pin,omitempty"`
	// Demote LTE when RSSI stays below DemoteRSSI (dBm) for DemoteHold;
	// restore once it is above DemoteRSSI+Hysteresis for DemoteHold.
	DemoteDisabled bool     `json:"demote_disabled,omitempty"`
	DemoteRSSI     float64  `json:"demote_rssi_dbm,omitempty"`
	DemoteRSRP     float64  `json:"demote_rsrp_dbm,omitempty"`
	Hysteresis     float64  `json:"hysteresis_db,omitempty"`
	DemoteHold     Duration `json:"demote_hold,omitempty"`
	// PollInterval of signal, registration and data state.
	PollInterval Duration `json:"poll_interval,omitempty"`
	// Link says how the data call is reflected on the uplink device:
	// "netlink" (set it up, put the modem's address on it) or "none"
	// (something else owns the device, e.g. the lab).
	Link string `json:"link,omitempty"`
}

// FieldError names the field at fault.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// subFieldErr turns a section's "field: problem" error into a FieldError
// with the full path.
func subFieldErr(prefix string, err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i > 0 && !strings.ContainsAny(msg[:i], " \t") {
		return &FieldError{Field: prefix + "." + msg[:i], Err: errors.New(msg[i+2:])}
	}
	return &FieldError{Field: prefix, Err: err}
}

// Load reads, decodes (rejecting unknown fields) and validates a config
// file, filling in defaults.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a config.
func Parse(b []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line := 1 + bytes.Count(b[:min(int(se.Offset), len(b))], []byte("\n"))
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			want := te.Type.String()
			if te.Type == reflect.TypeFor[Duration]() {
				want = "a duration like \"5ms\""
			}
			return nil, fieldErr(te.Field, "want %s, got JSON %s", want, te.Value)
		}
		// encoding/json says `json: unknown field "x"`: keep it, it names the field.
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the config object")
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// SetDefaults fills in every optional field.
func (c *Config) SetDefaults() {
	if c.StateDir == "" {
		c.StateDir = "/perm/lifeline"
	}
	if c.MetricsListen == "" {
		c.MetricsListen = "127.0.0.1:9120"
	}
	if c.Concentrator.ProbePort == 0 {
		c.Concentrator.ProbePort = 7
	}
	if c.MPTCP.Subflows == 0 {
		c.MPTCP.Subflows = 4
	}
	if c.MPTCP.AddAddrAccepted == 0 {
		c.MPTCP.AddAddrAccepted = 4
	}
	f := &c.Failover
	if f.ProbeInterval == 0 {
		f.ProbeInterval = Duration(5 * time.Millisecond)
	}
	if f.BackupProbeInterval == 0 {
		f.BackupProbeInterval = Duration(time.Second)
	}
	if f.MinTimeout == 0 {
		f.MinTimeout = Duration(15 * time.Millisecond)
	}
	if f.HoldDown == 0 {
		f.HoldDown = Duration(500 * time.Millisecond)
	}
	if f.BackupInitCwnd == 0 {
		f.BackupInitCwnd = 32
	}
	if f.Nudge == "" {
		f.Nudge = NudgeAuto
		if f.NoNudge {
			f.Nudge = NudgeOff
		}
	}
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		if u.Kind == "" {
			u.Kind = u.Name
		}
		w := &u.WireGuard
		if w.MTU == 0 {
			w.MTU = 1420
		}
		if w.Keepalive == 0 {
			w.Keepalive = Duration(15 * time.Second)
		}
		if w.ConcentratorInterface == "" && len("c"+w.Interface) <= 15 {
			w.ConcentratorInterface = "c" + w.Interface
		}
	}
	if m := c.Modem; m != nil {
		if m.DemoteRSSI == 0 {
			m.DemoteRSSI = -100
		}
		if m.DemoteRSRP == 0 {
			m.DemoteRSRP = -115
		}
		if m.Hysteresis == 0 {
			m.Hysteresis = 5
		}
		if m.DemoteHold == 0 {
			m.DemoteHold = Duration(10 * time.Second)
		}
		if m.PollInterval == 0 {
			m.PollInterval = Duration(5 * time.Second)
		}
		if m.Link == "" {
			m.Link = "netlink"
		}
	}
}

var ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// ValidKey reports whether s is a base64 WireGuard key.
func ValidKey(s string) error {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("not base64: %w", err)
	}
	if len(b) != 32 {
		return fmt.Errorf("want 32 bytes, got %d", len(b))
	}
	return nil
}

// Validate checks every field. It reports the first problem, naming the
// field as a JSON path such as uplinks[1].wireguard.port.
func (c *Config) Validate() error {
	cc := c.Concentrator
	if cc.Endpoint == "" {
		return fieldErr("concentrator.endpoint", "missing: the concentrator's public address is required")
	}
	if _, err := netip.ParseAddr(cc.Endpoint); err != nil && !hostnameOK(cc.Endpoint) {
		return fieldErr("concentrator.endpoint", "%q is neither an IP address nor a host name", cc.Endpoint)
	}
	if cc.PublicKey != "" {
		if err := ValidKey(cc.PublicKey); err != nil {
			return fieldErr("concentrator.public_key", "%v", err)
		}
	}
	if _, err := netip.ParseAddr(cc.ServiceAddress); err != nil {
		return fieldErr("concentrator.service_address", "%v", err)
	}
	if cc.ProbePort < 1 || cc.ProbePort > 65535 {
		return fieldErr("concentrator.probe_port", "%d out of range 1..65535", cc.ProbePort)
	}
	if cc.Egress != "" && !ifnameRE.MatchString(cc.Egress) {
		return fieldErr("concentrator.egress", "%q is not a valid interface name", cc.Egress)
	}
	if _, err := netip.ParseAddrPort(c.MetricsListen); err != nil {
		return fieldErr("metrics_listen", "%v", err)
	}
	if c.MPTCP.Subflows > 8 {
		return fieldErr("mptcp.subflows", "%d exceeds the kernel's maximum of 8", c.MPTCP.Subflows)
	}
	if c.MPTCP.AddAddrAccepted > 8 {
		return fieldErr("mptcp.add_addr_accepted", "%d exceeds the kernel's maximum of 8", c.MPTCP.AddAddrAccepted)
	}
	if c.Failover.ProbeInterval < Duration(time.Millisecond) {
		return fieldErr("failover.probe_interval", "%v is below 1ms", c.Failover.ProbeInterval.D())
	}
	if n := c.Failover.BackupInitCwnd; n < 1 || n > 1024 {
		return fieldErr("failover.backup_initcwnd", "%d segments: want 1 to 1024 (10 is the kernel's default)", n)
	}
	switch c.Failover.Nudge {
	case NudgeAuto, NudgeOn, NudgeOff:
	default:
		return fieldErr("failover.nudge", "%q: want auto, on or off", c.Failover.Nudge)
	}
	if c.Failover.NoNudge && c.Failover.Nudge != NudgeOff {
		return fieldErr("failover.no_nudge", "true contradicts \"nudge\": %q (no_nudge is the old spelling of \"nudge\": \"off\")", c.Failover.Nudge)
	}
	if n := c.Failover.MinRcvbuf; n != 0 && (n < MinRcvbufMin || n > MinRcvbufMax) {
		return fieldErr("failover.min_rcvbuf", "%d bytes: want %d to %d, or 0 to derive it from the send-buffer cap", n, MinRcvbufMin, MinRcvbufMax)
	}
	if n := c.Failover.MaxSndbuf; n != 0 && (n < MaxSndbufMin || n > MaxSndbufMax) {
		return fieldErr("failover.max_sndbuf", "%d bytes: want %d to %d, or 0 to derive it from the SQM rates (%d is the kernel's default)", n, MaxSndbufMin, MaxSndbufMax, KernelSndbuf)
	}
	if len(c.Uplinks) == 0 {
		return fieldErr("uplinks", "at least one uplink is required")
	}
	if len(c.Uplinks) > 8 {
		return fieldErr("uplinks", "%d uplinks; at most 8 are supported", len(c.Uplinks))
	}
	names := map[string]string{}
	devs := map[string]string{}
	ifaces := map[string]string{}
	ports := map[int]string{}
	addrs := map[netip.Addr]string{}
	primaries := 0
	for i, u := range c.Uplinks {
		p := fmt.Sprintf("uplinks[%d]", i)
		if u.Name == "" || !ifnameRE.MatchString(u.Name) {
			return fieldErr(p+".name", "%q must be 1-15 characters of [A-Za-z0-9_.-]", u.Name)
		}
		if prev, ok := names[u.Name]; ok {
			return fieldErr(p+".name", "%q already used by %s", u.Name, prev)
		}
		names[u.Name] = p
		if !ifnameRE.MatchString(u.Device) {
			return fieldErr(p+".device", "%q is not a valid interface name", u.Device)
		}
		if prev, ok := devs[u.Device]; ok {
			return fieldErr(p+".device", "%q already used by %s", u.Device, prev)
		}
		devs[u.Device] = p
		switch u.Role {
		case RolePrimary:
			primaries++
		case RoleBackup:
		default:
			return fieldErr(p+".role", "%q: want primary or backup", u.Role)
		}
		if u.Priority < 0 || u.Priority > 1000 {
			return fieldErr(p+".priority", "%d out of range 0..1000", u.Priority)
		}
		if u.Gateway != "" {
			if _, err := netip.ParseAddr(u.Gateway); err != nil {
				return fieldErr(p+".gateway", "%v", err)
			}
		}
		if u.Address != "" {
			if _, err := netip.ParsePrefix(u.Address); err != nil {
				return fieldErr(p+".address", "%v", err)
			}
		}
		w := u.WireGuard
		wp := p + ".wireguard"
		if !ifnameRE.MatchString(w.Interface) {
			return fieldErr(wp+".interface", "%q is not a valid interface name (≤15 chars)", w.Interface)
		}
		if prev, ok := ifaces[w.Interface]; ok {
			return fieldErr(wp+".interface", "%q already used by %s", w.Interface, prev)
		}
		if _, ok := devs[w.Interface]; ok {
			return fieldErr(wp+".interface", "%q is also an uplink device", w.Interface)
		}
		ifaces[w.Interface] = wp
		if w.ConcentratorInterface != "" && !ifnameRE.MatchString(w.ConcentratorInterface) {
			return fieldErr(wp+".concentrator_interface", "%q is not a valid interface name", w.ConcentratorInterface)
		}
		if w.PublicKey != "" {
			if err := ValidKey(w.PublicKey); err != nil {
				return fieldErr(wp+".public_key", "%v", err)
			}
		}
		if w.Port < 1 || w.Port > 65535 {
			return fieldErr(wp+".port", "%d out of range 1..65535", w.Port)
		}
		if prev, ok := ports[w.Port]; ok {
			return fieldErr(wp+".port", "%d clashes with %s: every path needs its own UDP port", w.Port, prev)
		}
		ports[w.Port] = wp + ".port"
		if w.Endpoint != "" {
			if _, err := netip.ParseAddrPort(w.Endpoint); err != nil {
				return fieldErr(wp+".endpoint", "%v", err)
			}
		}
		pfx, err := netip.ParsePrefix(w.Address)
		if err != nil {
			return fieldErr(wp+".address", "%v", err)
		}
		if prev, ok := addrs[pfx.Addr()]; ok {
			return fieldErr(wp+".address", "%v already used by %s", pfx.Addr(), prev)
		}
		addrs[pfx.Addr()] = wp + ".address"
		peer, err := netip.ParseAddr(w.PeerAddress)
		if err != nil {
			return fieldErr(wp+".peer_address", "%v", err)
		}
		if !pfx.Contains(peer) {
			return fieldErr(wp+".peer_address", "%v is outside the tunnel prefix %v", peer, pfx)
		}
		if w.MTU < 1280 || w.MTU > 9000 {
			return fieldErr(wp+".mtu", "%d out of range 1280..9000", w.MTU)
		}
		if u.Ethernet != nil && u.WiFi != nil {
			return fieldErr(p+".wifi", "an uplink is either ethernet or wifi, not both")
		}
		if u.Managed() && (u.Gateway != "" || u.Address != "") {
			f := p + ".gateway"
			if u.Address != "" {
				f = p + ".address"
			}
			return fieldErr(f, "set addressing inside the ethernet/wifi section, not here")
		}
		if u.Ethernet != nil {
			if err := u.Ethernet.Validate(); err != nil {
				return subFieldErr(p+".ethernet", err)
			}
		}
		if u.WiFi != nil {
			if err := u.WiFi.Validate(); err != nil {
				return subFieldErr(p+".wifi", err)
			}
		}
		if u.SQM != nil {
			if err := u.SQM.Validate(); err != nil {
				var ce *sqm.ConfigError
				if errors.As(err, &ce) {
					return fieldErr(p+".sqm."+ce.Field, "%s", ce.Msg)
				}
				return fieldErr(p+".sqm", "%v", err)
			}
		}
	}
	if primaries == 0 {
		return fieldErr("uplinks", "no uplink has role primary")
	}
	if m := c.Modem; m != nil {
		if m.Port == "" {
			return fieldErr("modem.port", "missing")
		}
		if _, ok := names[m.Uplink]; !ok {
			return fieldErr("modem.uplink", "%q names no uplink", m.Uplink)
		}
		if m.DemoteRSSI > -50 || m.DemoteRSSI < -120 {
			return fieldErr("modem.demote_rssi_dbm", "%v out of range -120..-50", m.DemoteRSSI)
		}
		if m.Link != "netlink" && m.Link != "none" {
			return fieldErr("modem.link", "%q: want netlink or none", m.Link)
		}
		if m.PollInterval < Duration(100*time.Millisecond) {
			return fieldErr("modem.poll_interval", "%v is below 100ms", m.PollInterval.D())
		}
		if m.DemoteRSRP > -44 || m.DemoteRSRP < -140 {
			return fieldErr("modem.demote_rsrp_dbm", "%v out of range -140..-44", m.DemoteRSRP)
		}
		if m.Hysteresis < 0 {
			return fieldErr("modem.hysteresis_db", "%v is negative", m.Hysteresis)
		}
	}
	return nil
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)

func hostnameOK(s string) bool { return hostnameRE.MatchString(s) }

// ValidateRouter checks what only the router needs: its private keys and
// the concentrator's public key.
func (c *Config) ValidateRouter() error {
	if c.Concentrator.PublicKey == "" {
		return fieldErr("concentrator.public_key", "missing: the router needs the concentrator's public key")
	}
	for i, u := range c.Uplinks {
		if u.WireGuard.PrivateKeyFile == "" {
			return fieldErr(fmt.Sprintf("uplinks[%d].wireguard.private_key_file", i), "missing")
		}
	}
	return nil
}

// ValidateConcentrator checks what only the concentrator needs.
func (c *Config) ValidateConcentrator() error {
	if c.Concentrator.PrivateKeyFile == "" {
		return fieldErr("concentrator.private_key_file", "missing: the concentrator needs its private key")
	}
	for i, u := range c.Uplinks {
		if u.WireGuard.PublicKey == "" {
			return fieldErr(fmt.Sprintf("uplinks[%d].wireguard.public_key", i), "missing: the concentrator needs the router's public key for this path")
		}
		if u.WireGuard.ConcentratorInterface == "" {
			return fieldErr(fmt.Sprintf("uplinks[%d].wireguard.concentrator_interface", i), "missing")
		}
	}
	return nil
}

// Ordered returns the uplinks sorted by preference: primaries first, then
// by descending priority, then by name.
func (c *Config) Ordered() []Uplink {
	us := append([]Uplink(nil), c.Uplinks...)
	sort.SliceStable(us, func(i, j int) bool {
		if (us[i].Role == RolePrimary) != (us[j].Role == RolePrimary) {
			return us[i].Role == RolePrimary
		}
		if us[i].Priority != us[j].Priority {
			return us[i].Priority > us[j].Priority
		}
		return us[i].Name < us[j].Name
	})
	return us
}

// EndpointFor returns the concentrator's UDP address for uplink u.
func (c *Config) EndpointFor(u Uplink) string {
	if u.WireGuard.Endpoint != "" {
		return u.WireGuard.Endpoint
	}
	return joinHostPort(c.Concentrator.Endpoint, u.WireGuard.Port)
}

func joinHostPort(h string, p int) string {
	if strings.Contains(h, ":") {
		return fmt.Sprintf("[%s]:%d", h, p)
	}
	return fmt.Sprintf("%s:%d", h, p)
}
