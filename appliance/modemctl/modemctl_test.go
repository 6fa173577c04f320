package modemctl

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/modem/sim"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func f(v float64) *float64 { return &v }

func TestDemoterHysteresis(t *testing.T) {
	d := &Demoter{RSSI: -100, RSRP: -115, Hysteresis: 5, Hold: 10 * time.Second}
	t0 := time.Unix(0, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	steps := []struct {
		t      float64
		rssi   *float64
		rsrp   *float64
		want   bool
		reason string
	}{
		{0, f(-80), f(-90), false, "strong"},
		{1, f(-105), f(-90), false, "weak, hold not yet over"},
		{5, f(-99), f(-90), false, "back above threshold resets the hold"},
		{6, f(-105), f(-90), false, "weak again"},
		{15, nil, nil, false, "no reading changes nothing"},
		{16, f(-106), f(-90), true, "weak for the hold time"},
		{17, f(-97), f(-90), true, "above threshold but within hysteresis"},
		{30, f(-96), f(-90), true, "still within hysteresis"},
		{31, f(-94), f(-90), true, "strong, hold starts"},
		{40, f(-94), f(-90), true, "strong, hold not over"},
		{41, f(-94), f(-90), false, "strong for the hold time"},
		{42, f(-80), f(-120), false, "weak RSRP alone starts a hold"},
		{52, f(-80), f(-120), true, "weak RSRP for the hold time"},
	}
	for _, s := range steps {
		if got := d.Update(at(s.t), s.rssi, s.rsrp); got != s.want {
			t.Fatalf("t=%vs (%s): demoted=%v, want %v", s.t, s.reason, got, s.want)
		}
	}
}

// TestLabModem is the lab test: a simulated modem boots and
// registers, its data call brings wwan0's carrier up, the call is lost and
// the manager reconnects it, and a weak signal demotes LTE until it
// recovers. The simulated modem's call controls the carrier of wwan0 (the
// far end of a veth), as a real modem's call controls its WWAN link.
func TestLabModem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
	ns := fmt.Sprintf("llmodem%d", os.Getpid())
	peer := fmt.Sprintf("mp%d", os.Getpid()%100000)
	run := func(args ...string) string {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "-n", ns, "link", "add", "wwan0", "type", "veth", "peer", "name", peer)
	run("ip", "-n", ns, "link", "set", peer, "down")

	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	prof, err := sim.LoadProfile("testdata/lab-fast.json")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		carrierN int
	)
	setPeer := func(up bool) error {
		l, err := h.LinkByName(peer)
		if err != nil {
			return err
		}
		if up {
			mu.Lock()
			carrierN++
			mu.Unlock()
			return h.LinkSetUp(l)
		}
		return h.LinkSetDown(l)
	}
	link := t.TempDir() + "/ttyModem"
	s, err := sim.Start(ctx, prof, sim.Options{
		PortLink: link,
		LinkUp:   func() error { return setPeer(true) },
		LinkDown: func() error { return setPeer(false) },
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s

	var dmu sync.Mutex
	var demotions []bool
	cfg := config.Modem{Port: link, Uplink: "lte", APN: "internet", DemoteRSSI: -100, DemoteRSRP: -115, Hysteresis: 5,
		DemoteHold: config.Duration(time.Second), PollInterval: config.Duration(200 * time.Millisecond)}
	svc := New(cfg, NetlinkLink{Handle: h, Device: "wwan0", Log: slog.Default()},
		func(u string, d bool) {
			dmu.Lock()
			demotions = append(demotions, d)
			dmu.Unlock()
		}, slog.Default())
	svcDone := make(chan struct{})
	go func() { svc.Run(ctx); close(svcDone) }()
	// Stop the service before the handle and namespace go away.
	defer func() { cancel(); <-svcDone }()

	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; status %+v", what, svc.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	carrier := func() bool {
		l, err := h.LinkByName("wwan0")
		return err == nil && l.Attrs().OperState == netlink.OperUp
	}
	wait("registered, data call up, wwan0 with carrier and the modem's address", 15*time.Second, func() bool {
		st := svc.Status()
		if st.Registration != "home" || !st.Data.Connected || !carrier() {
			return false
		}
		out, _ := exec.Command("ip", "-n", ns, "-4", "addr", "show", "wwan0").CombinedOutput()
		return strings.Contains(string(out), "10.110.61.83/32")
	})
	wait("the lost data call reconnected", 15*time.Second, func() bool {
		st := svc.Status()
		mu.Lock()
		n := carrierN
		mu.Unlock()
		return st.Reconnects >= 1 && st.Data.Connected && n >= 2 && carrier()
	})
	wait("weak signal demotes LTE", 15*time.Second, func() bool {
		dmu.Lock()
		defer dmu.Unlock()
		return len(demotions) >= 1 && demotions[0]
	})
	if st := svc.Status(); st.RSSI == nil || *st.RSSI > -100 {
		t.Errorf("demoted with RSSI %v", fmtp(st.RSSI))
	}
	wait("recovered signal restores LTE", 15*time.Second, func() bool {
		dmu.Lock()
		defer dmu.Unlock()
		return len(demotions) >= 2 && !demotions[1]
	})
	dmu.Lock()
	if len(demotions) != 2 {
		t.Errorf("demotions = %v, want exactly [true false] (no flapping)", demotions)
	}
	dmu.Unlock()
}
