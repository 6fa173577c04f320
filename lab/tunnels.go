package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/sqm"
	"github.com/lifeline-router/lifeline/uplinks/wg"
)

// LifelineOptions say how to run our supervisor and concentrator in the
// world.
type LifelineOptions struct {
	// Bin is bin/lifeline.
	Bin string
	// Tweak, when set, edits the generated config before it is written
	// (e.g. the failover policy's hold-down).
	Tweak func(*config.Config)
	// RTOMin is put on the concentrator's tunnel routes when the
	// concentrator has not set one (0: leave them).
	RTOMin time.Duration
	// ModemSim, when set, is bin/lifeline-modemsim: the LTE uplink then
	// comes up only once the supervisor has brought up the simulated
	// modem's data call (ModemProfile, default lab/testdata/modem-lab.json).
	ModemSim, ModemProfile string
}

// Config builds the lab's lifeline config: one uplink per path whose
// WireGuard endpoint is that path's relay, keys generated into the lab's
// temp dir. The same file serves both ends.
func (w *World) Config() (*config.Config, error) {
	key := func(name string) (wgtypes.Key, string, error) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return k, "", fmt.Errorf("GeneratePrivateKey: %w", err)
		}
		f := filepath.Join(w.Dir, name+".key")
		if err := os.WriteFile(f, []byte(k.String()+"\n"), 0o600); err != nil {
			return k, "", fmt.Errorf("WriteFile(%s): %w", f, err)
		}
		return k, f, nil
	}
	ck, cf, err := key("concentrator")
	if err != nil {
		return nil, err
	}
	c := &config.Config{
		StateDir:      filepath.Join(w.Dir, "state"),
		MetricsListen: "127.0.0.1:9120",
		Concentrator: config.Concentrator{
			Endpoint:       ConcPublic,
			PublicKey:      ck.PublicKey().String(),
			PrivateKeyFile: cf,
			ServiceAddress: ServiceAddress,
		},
	}
	// On the host both ends' WireGuard run in userspace, on two vCPUs
	// shared with the relays, the uploader and the receiver: measured
	// pauses of the tunnels' receive path reach ~70 ms under load. A 50 ms
	// floor keeps that from reading as a dead path; the probes' own
	// adaptation (recent RTTs and pauses) adds to it. In the VM lab the
	// kernel's WireGuard runs on a virtual clock that host load does not
	// reach, so the supervisor keeps the product's default floor there.
	if !wg.KernelHasWireGuard() {
		c.Failover.MinTimeout = config.Duration(LabMinTimeout)
	}
	// The host lab's HTB stands in for SQM, which the supervisor derives
	// its send-buffer cap (and so its receive-buffer floor) from: give it
	// the cap SQM at the same rates would.
	if !w.opt.CAKE && !w.opt.NoShaper {
		var top uint64
		for _, p := range w.Paths {
			top = max(top, uint64(w.ShaperRate(p)))
		}
		c.Failover.MaxSndbuf = config.SndbufFor(top)
	}
	for _, p := range w.Paths {
		k, f, err := key(p.WG)
		if err != nil {
			return nil, err
		}
		// The relay is the endpoint; with kernel links the concentrator
		// itself, reached through this uplink's gateway.
		endpoint := fmt.Sprintf("%s:%d", p.Gateway(), p.Port)
		if w.opt.Netem {
			endpoint = fmt.Sprintf("%s:%d", ConcPublic, p.Port)
		}
		var shaper *sqm.UplinkConfig
		if w.opt.CAKE && !w.opt.NoShaper {
			shaper = &sqm.UplinkConfig{Egress: &sqm.DirectionConfig{Bandwidth: sqm.Rate(w.ShaperRate(p)), Diffserv: "besteffort"}}
		}
		c.Uplinks = append(c.Uplinks, config.Uplink{
			SQM:  shaper,
			Name: p.Name, Device: p.Dev, Kind: p.Name, Role: p.Role, Priority: p.Priority,
			Gateway: p.Gateway(),
			WireGuard: config.WireGuard{
				Interface:             p.WG,
				ConcentratorInterface: p.ConcWG,
				PrivateKeyFile:        f,
				PublicKey:             k.PublicKey().String(),
				Port:                  p.Port,
				Endpoint:              endpoint,
				Address:               p.TunnelAddr(),
				PeerAddress:           p.TunnelPeer(),
			},
		})
	}
	return c, nil
}

// DefaultModemProfile is the simulated modem the lab uses.
const DefaultModemProfile = "lab/testdata/modem-lab.json"

// LabMinTimeout is the supervisor's probe-timeout floor in the lab.
const LabMinTimeout = 50 * time.Millisecond

// StartLifeline writes the config, starts the concentrator in the conc
// namespace and the supervisor in the router namespace, and waits until
// both print "lifeline: ready" and the supervisor's /healthz answers 200.
func (w *World) StartLifeline(ctx context.Context, o LifelineOptions) error {
	c, err := w.Config()
	if err != nil {
		return err
	}
	if o.Tweak != nil {
		o.Tweak(c)
	}
	if o.ModemSim != "" {
		prof := o.ModemProfile
		if prof == "" {
			prof = DefaultModemProfile
		}
		if c.Modem, err = w.startModem(ctx, o.ModemSim, prof); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	// Validate as the programs will, so a lab bug reads as one.
	if _, err := config.Parse(b); err != nil {
		return fmt.Errorf("lab config: %w", err)
	}
	w.ConfigFile = filepath.Join(w.Dir, "lifeline.json")
	w.Events = filepath.Join(w.Dir, "events.jsonl")
	if err := os.WriteFile(w.ConfigFile, b, 0o600); err != nil {
		return fmt.Errorf("WriteFile(%s): %w", w.ConfigFile, err)
	}
	conc, err := w.start("concentrator", w.Conc, false, o.Bin, "concentrator", "--config", w.ConfigFile)
	if err != nil {
		return err
	}
	if err := conc.waitLine(ctx, "lifeline: ready", 30*time.Second); err != nil {
		return err
	}
	sup, err := w.start("supervisor", w.Router, false, o.Bin, "run", "--config", w.ConfigFile, "--events", w.Events)
	if err != nil {
		return err
	}
	if err := sup.waitLine(ctx, "lifeline: ready", 30*time.Second); err != nil {
		return err
	}
	if err := w.waitHealthz(ctx, 10*time.Second); err != nil {
		return err
	}
	if o.RTOMin > 0 {
		if err := w.setConcRTOMin(o.RTOMin); err != nil {
			return err
		}
	}
	return nil
}

func (w *World) waitHealthz(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		status, err := w.healthz()
		if err == nil && status == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("status %d, err %v", status, err)
		if time.Now().After(deadline) {
			return fmt.Errorf("supervisor /healthz in %s not 200 within %v: %s", w.Router, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *World) healthz() (int, error) {
	conn, err := dialIn(w.Router, "127.0.0.1:9120", time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "GET /healthz HTTP/1.0\r\nHost: lifeline\r\n\r\n")
	var proto string
	var status int
	if _, err := fmt.Fscan(conn, &proto, &status); err != nil {
		return 0, fmt.Errorf("GET /healthz: %w", err)
	}
	return status, nil
}

// setConcRTOMin puts rto_min on the concentrator's routes into the tunnels
// that lack one: a 10 ms floor instead of 200 ms shortens the
// retransmission of what the dead path swallowed.
func (w *World) setConcRTOMin(d time.Duration) error {
	nl, err := nlHandle(w.Conc)
	if err != nil {
		return err
	}
	defer nl.Close()
	tunnels := netip.MustParsePrefix("10.55.0.0/16")
	for _, p := range w.Paths {
		link, err := nl.LinkByName(p.ConcWG)
		if err != nil {
			return fmt.Errorf("LinkByName(%s in %s): %w", p.ConcWG, w.Conc, err)
		}
		routes, err := nl.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("RouteList(%s): %w", p.ConcWG, err)
		}
		for _, r := range routes {
			if r.Dst == nil || r.RtoMin != 0 {
				continue
			}
			a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
			if !ok || !tunnels.Contains(a) {
				continue
			}
			r.RtoMin = int(d.Milliseconds())
			if err := nl.RouteReplace(&r); err != nil {
				return fmt.Errorf("RouteReplace(%v rto_min %v in %s): %w", r, d, w.Conc, err)
			}
		}
	}
	return nil
}

// Event is one line of the supervisor's --events file.
type Event struct {
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	Uplink string    `json:"uplink,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// ReadEvents parses the supervisor's events so far; bad lines are skipped
// and counted in the error only when nothing parsed.
func (w *World) ReadEvents() ([]Event, error) {
	if w.Events == "" {
		return nil, nil
	}
	b, err := os.ReadFile(w.Events)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var evs []Event
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return evs, fmt.Errorf("%s line %d: %w", w.Events, i+1, err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// TxBytes reads a router-side interface's transmit counter over netlink.
func (w *World) TxBytes(ifname string) (uint64, error) {
	l, err := w.routerNl.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("LinkByName(%s in %s): %w", ifname, w.Router, err)
	}
	if s := l.Attrs().Statistics; s != nil {
		return s.TxBytes, nil
	}
	return 0, fmt.Errorf("LinkByName(%s): no statistics", ifname)
}
