package wifi

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Lines as wpa_supplicant 2.10 sends them on the control socket (formats
// from its wpa_ctrl.h event definitions and field logs; the hwsim VM test
// runs against the real thing).
const (
	evConnected    = "<3>CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=0 id_str=]"
	evConnected2   = "<3>CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:02:00 completed [id=0 id_str=]"
	evDisconnected = "<3>CTRL-EVENT-DISCONNECTED bssid=02:00:00:00:01:00 reason=3 locally_generated=1"
	evSignal       = "<3>CTRL-EVENT-SIGNAL-CHANGE above=0 signal=-80 noise=9999 txrate=6500"
	evScan         = "<2>CTRL-EVENT-SCAN-RESULTS "
	evTempDisabled = `<3>CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid="back haul" auth_failures=1 duration=10 reason=WRONG_KEY`
	statusReply    = "bssid=02:00:00:00:01:00\nfreq=5180\nssid=backhaul\nid=0\nmode=station\npairwise_cipher=CCMP\ngroup_cipher=CCMP\nkey_mgmt=SAE\npmf=2\nmgmt_group_cipher=BIP\nsae_group=19\nwpa_state=COMPLETED\naddress=02:00:00:00:00:00\n"
	signalReply    = "RSSI=-52\nLINKSPEED=866\nNOISE=9999\nFREQUENCY=5180\nWIDTH=80 MHz\nCENTER_FRQ1=5210\nAVG_RSSI=-53\n"
	scanReply      = "bssid / frequency / signal level / flags / ssid\n" +
		"02:00:00:00:01:00\t5180\t-55\t[WPA2-SAE-CCMP][ESS]\tbackhaul\n" +
		"02:00:00:00:03:00\t5955\t-62\t[WPA2-SAE-CCMP][ESS]\tbackhaul\n" +
		"02:00:00:00:04:00\t2437\t-40\t[WPA2-SAE-CCMP][ESS]\tbackhaul\n" +
		"02:00:00:00:05:00\t6115\t-50\t[WPA2-SAE-CCMP][ESS]\tneighbour\n"
)

func TestParseEvent(t *testing.T) {
	e, err := ParseEvent(evConnected)
	if err != nil || e.Name != "CTRL-EVENT-CONNECTED" || e.BSSID != "02:00:00:00:01:00" || e.Level != 3 || e.Fields["id"] != "0" {
		t.Errorf("connected: %+v %v", e, err)
	}
	e, _ = ParseEvent(evDisconnected)
	if e.Name != "CTRL-EVENT-DISCONNECTED" || e.BSSID != "02:00:00:00:01:00" || e.Fields["reason"] != "3" || e.Fields["locally_generated"] != "1" {
		t.Errorf("disconnected: %+v", e)
	}
	e, _ = ParseEvent(evTempDisabled)
	if e.Fields["ssid"] != "back haul" || e.Fields["reason"] != "WRONG_KEY" {
		t.Errorf("temp disabled: %+v", e)
	}
	for _, bad := range []string{"", "CTRL-EVENT-CONNECTED", "<x>A", "<3"} {
		if _, err := ParseEvent(bad); err == nil {
			t.Errorf("ParseEvent(%q) accepted", bad)
		}
	}
}

func TestParseScanResults(t *testing.T) {
	res, err := ParseScanResults(scanReply)
	if err != nil || len(res) != 4 || res[1].Freq != 5955 || res[1].Signal != -62 || res[3].SSID != "neighbour" {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := ParseScanResults("header\n02:00:00:00:01:00\tx\t-1\t[]\tssid\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad frequency: %v", err)
	}
}

func TestPreferredBSS(t *testing.T) {
	res, _ := ParseScanResults(scanReply)
	prefs := []string{"6", "5", "2.4"}
	b, ok := PreferredBSS(res, "backhaul", prefs, -70)
	if !ok || b.BSSID != "02:00:00:00:03:00" {
		t.Errorf("6 GHz preferred: %+v", b)
	}
	// 6 GHz too weak for the floor: 5 GHz over the stronger 2.4 GHz.
	b, _ = PreferredBSS(res, "backhaul", prefs, -60)
	if b.BSSID != "02:00:00:00:01:00" {
		t.Errorf("floor -60: %+v", b)
	}
	// Only 2.4 allowed.
	b, _ = PreferredBSS(res, "backhaul", []string{"2.4"}, -70)
	if b.BSSID != "02:00:00:00:04:00" {
		t.Errorf("2.4 only: %+v", b)
	}
	if _, ok := PreferredBSS(res, "other", prefs, -70); ok {
		t.Error("found a BSS of another SSID")
	}
}

func TestSignalPolicy(t *testing.T) {
	p := SignalPolicy{Threshold: -75, Hysteresis: 5, Hold: 10 * time.Second}
	t0 := time.Unix(0, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	steps := []struct {
		sec         int
		dbm         float64
		demoted, ch bool
	}{
		{0, -60, false, false},
		{1, -80, false, false}, // weak run starts
		{5, -60, false, false}, // one good sample resets it
		{6, -80, false, false},
		{15, -80, false, false}, // 9 s weak
		{16, -78, true, true},   // 10 s weak: demoted
		{17, -73, true, false},  // above threshold but inside hysteresis
		{30, -72, true, false},  // still inside
		{31, -70, true, false},  // strong run starts
		{40, -69, true, false},
		{41, -70, false, true}, // 10 s strong: restored
		{42, -74, false, false},
	}
	for _, s := range steps {
		d, ch := p.Observe(at(s.sec), s.dbm)
		if d != s.demoted || ch != s.ch {
			t.Fatalf("t=%ds %v dBm: demoted=%v changed=%v, want %v %v", s.sec, s.dbm, d, ch, s.demoted, s.ch)
		}
	}
	p.Observe(at(50), -90)
	p.Observe(at(61), -90)
	if !p.Demoted() || !p.Reset() || p.Demoted() {
		t.Error("Reset did not clear a demotion")
	}
}

// fakeSupplicant serves the control protocol on a unixgram socket the way
// wpa_supplicant does: one reply datagram per command, events to attached
// clients.
type fakeSupplicant struct {
	t    *testing.T
	path string
	conn *net.UnixConn

	mu       sync.Mutex
	replies  map[string]string
	attached []*net.UnixAddr
	cmds     []string
}

func newFakeSupplicant(t *testing.T, dir, iface string) *fakeSupplicant {
	t.Helper()
	path := filepath.Join(dir, iface)
	os.MkdirAll(dir, 0o700)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSupplicant{t: t, path: path, conn: c, replies: map[string]string{
		"PING": "PONG\n", "STATUS": "wpa_state=SCANNING\nssid=\n", "SIGNAL_POLL": "FAIL\n",
		"SCAN_RESULTS": "bssid / frequency / signal level / flags / ssid\n",
	}}
	done := make(chan struct{})
	go f.serve(done)
	t.Cleanup(func() { c.Close(); <-done; os.Remove(path) })
	return f
}

func (f *fakeSupplicant) serve(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 4096)
	for {
		n, from, err := f.conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		cmd := string(buf[:n])
		f.mu.Lock()
		f.cmds = append(f.cmds, cmd)
		reply, ok := f.replies[cmd]
		switch {
		case cmd == "ATTACH":
			f.attached = append(f.attached, from)
			reply, ok = "OK\n", true
		case cmd == "DETACH":
			reply, ok = "OK\n", true
		case strings.HasPrefix(cmd, "ROAM "), cmd == "SCAN":
			reply, ok = "OK\n", true
		}
		f.mu.Unlock()
		if !ok {
			reply = "UNKNOWN COMMAND\n"
		}
		if from != nil {
			f.conn.WriteToUnix([]byte(reply), from)
		}
	}
}

func (f *fakeSupplicant) set(cmd, reply string) {
	f.mu.Lock()
	f.replies[cmd] = reply
	f.mu.Unlock()
}

func (f *fakeSupplicant) event(line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.attached {
		f.conn.WriteToUnix([]byte(line), a)
	}
}

func (f *fakeSupplicant) sawCmd(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cmds {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

func (f *fakeSupplicant) sawExact(cmd string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cmds {
		if c == cmd {
			return true
		}
	}
	return false
}

func (f *fakeSupplicant) attachedN() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.attached)
}

func TestCtrlAgainstFake(t *testing.T) {
	f := newFakeSupplicant(t, t.TempDir(), "wlan0")
	f.set("STATUS", statusReply)
	c, err := DialCtrl(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if r, err := c.Request(ctx, "PING"); err != nil || r != "PONG\n" {
		t.Fatalf("PING: %q %v", r, err)
	}
	r, err := c.Request(ctx, "STATUS")
	if kv := ParseKV(r); err != nil || kv["wpa_state"] != "COMPLETED" || kv["freq"] != "5180" || kv["key_mgmt"] != "SAE" {
		t.Errorf("STATUS: %v %v", kv, err)
	}
	if _, err := c.Request(ctx, "BOGUS secret"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("unknown command: %v (must fail, without echoing arguments)", err)
	}
	mon, err := Attach(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.event(evDisconnected)
	select {
	case e := <-mon.Events():
		if e.Name != "CTRL-EVENT-DISCONNECTED" {
			t.Errorf("event %+v", e)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no event")
	}
	mon.Close()
	if _, ok := <-mon.Events(); ok {
		t.Error("events not closed after Close")
	}
}
