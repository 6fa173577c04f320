package modem

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/lifeline-router/lifeline/modem/at"
	"github.com/lifeline-router/lifeline/modem/sim"
)

func startSim(t *testing.T, profile string, opts sim.Options) (*sim.Sim, context.CancelFunc) {
	t.Helper()
	p, err := sim.LoadProfile(filepath.Join("testdata", "profiles", profile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := sim.Start(ctx, p, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return s, cancel
}

func openSim(t *testing.T, s *sim.Sim) *Client {
	t.Helper()
	c, err := OpenClient(s.Path(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// j renders Info as the CLI does, so a mismatch shows every field.
func j(i Info) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// Every family's transcript, replayed through the simulator; every parsed
// value checked. The expected values are worked out by hand from the
// (real, where marked in the profile) lines.
func TestFamilyTranscripts(t *testing.T) {
	for _, tc := range []struct {
		profile, family string
		want            string
		dataCmd         string // the family's data-call command, as the sim saw it
		dhcp            bool
		ip              string
	}{
		{"quectel-rm520n-nsa.json", "quectel",
			`{"manufacturer":"Quectel","model":"RM520N-GL","revision":"RM520NGLAAR01A07M4G","imei":"866834050000017","sim":"ready","registration":"home","operator":"TIM","rat":"NR5G-NSA","rssi_dbm":-58,"rsrp_dbm":-94,"rsrq_db":-15,"sinr_db":9,"nr_rsrp_dbm":-96,"nr_rsrq_db":-10,"nr_sinr_db":18,"data":{"connected":false,"ipv4":null}}`,
			"cmd AT$QCRMCALL=1,1", false, "10.110.61.83"},
		{"quectel-rm520n-sa.json", "quectel",
			`{"manufacturer":"Quectel","model":"RM520N-GL","revision":"RM520NGLAAR03A03M4G","imei":"866834050000025","sim":"ready","registration":"home","operator":"T-Mobile","rat":"NR5G-SA","rssi_dbm":null,"rsrp_dbm":-104,"rsrq_db":-13,"sinr_db":11,"nr_rsrp_dbm":-104,"nr_rsrq_db":-13,"nr_sinr_db":11,"data":{"connected":false,"ipv4":null}}`,
			"cmd AT+QNETDEVCTL=1,1,1", true, "192.168.225.20"},
		{"quectel-ec25.json", "quectel",
			`{"manufacturer":"Quectel","model":"EC25","revision":"EC25AFFAR07A08M4G","imei":"861107030000011","sim":"ready","registration":"roaming","operator":"Verizon Wireless","rat":"LTE","rssi_dbm":-56,"rsrp_dbm":-96,"rsrq_db":-11,"sinr_db":14,"nr_rsrp_dbm":null,"nr_rsrq_db":null,"nr_sinr_db":null,"data":{"connected":false,"ipv4":null}}`,
			"cmd AT$QCRMCALL=1,1", false, "100.64.12.34"},
		{"sierra-em7455.json", "sierra",
			`{"manufacturer":"Sierra Wireless, Incorporated","model":"EM7455","revision":"SWI9X30C_02.24.05.06 r7040 CARMD-EV-FRMWR2 2017/05/19 06:23:09","imei":"359072060000019","sim":"ready","registration":"home","operator":"Telekom.de","rat":"LTE","rssi_dbm":-45,"rsrp_dbm":-81,"rsrq_db":-14,"sinr_db":23.8,"nr_rsrp_dbm":null,"nr_rsrq_db":null,"nr_sinr_db":null,"data":{"connected":false,"ipv4":null}}`,
			"cmd AT!SCACT=1,1", false, "10.170.3.77"},
		{"fibocom-fm350.json", "fibocom",
			`{"manufacturer":"Fibocom Wireless Inc.","model":"FM350-GL","revision":"81600.0000.00.29.19.16_GC","imei":"356200290000014","sim":"ready","registration":"home","operator":"Telstra","rat":"NR5G-NSA","rssi_dbm":-65,"rsrp_dbm":-83,"rsrq_db":-8,"sinr_db":20,"nr_rsrp_dbm":-87,"nr_rsrq_db":-13.5,"nr_sinr_db":12,"data":{"connected":false,"ipv4":null}}`,
			"cmd AT+CGACT=1,1", false, "10.45.0.9"},
		{"simcom-sim7600.json", "simcom",
			`{"manufacturer":"SIMCOM INCORPORATED","model":"SIMCOM_SIM7600G-H","revision":"LE20B04SIM7600G22","imei":"862636050000012","sim":"ready","registration":"home","operator":"Jio 4G","rat":"LTE","rssi_dbm":-77.3,"rsrp_dbm":-112.6,"rsrq_db":-16.8,"sinr_db":7,"nr_rsrp_dbm":null,"nr_rsrq_db":null,"nr_sinr_db":null,"data":{"connected":false,"ipv4":null}}`,
			"cmd AT$QCRMCALL=1,1", false, "10.20.30.40"},
		{"generic.json", "generic",
			`{"manufacturer":"Acme Cellular","model":"LTE-1000","revision":"1.0.7","imei":"490154203237518","sim":"ready","registration":"home","operator":"Example Net","rat":"LTE","rssi_dbm":-77,"rsrp_dbm":-91,"rsrq_db":-10,"sinr_db":null,"nr_rsrp_dbm":null,"nr_rsrq_db":null,"nr_sinr_db":null,"data":{"connected":false,"ipv4":null}}`,
			"cmd AT+CGACT=1,1", false, "10.110.61.83"},
	} {
		t.Run(strings.TrimSuffix(tc.profile, ".json"), func(t *testing.T) {
			s, _ := startSim(t, tc.profile, sim.Options{})
			c := openSim(t, s)
			ctx := context.Background()
			if c.Family().Name != tc.family {
				t.Fatalf("family %s, want %s", c.Family().Name, tc.family)
			}
			info, err := c.Info(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := j(info); got != tc.want {
				t.Fatalf("info\n got %s\nwant %s", got, tc.want)
			}
			prefix, err := c.Connect(ctx, DataConfig{APN: "internet", User: "u", Password: "p"})
			if err != nil {
				t.Fatal(err)
			}
			if tc.dhcp != !prefix.IsValid() {
				t.Fatalf("prefix %v, want dhcp=%v", prefix, tc.dhcp)
			}
			if !tc.dhcp && prefix != netip.MustParsePrefix(tc.ip+"/32") {
				t.Fatalf("prefix %v, want %s/32", prefix, tc.ip)
			}
			// The simulator records data_up after it has written the
			// reply, so the driver can see OK first: wait for it.
			deadline := time.Now().Add(2 * time.Second)
			for !contains(s.Events(), tc.dataCmd) || !contains(s.Events(), "data_up") {
				if time.Now().After(deadline) {
					t.Fatalf("sim events %q lack %q/data_up", s.Events(), tc.dataCmd)
				}
				time.Sleep(time.Millisecond)
			}
			ds, err := c.DataState(ctx, 1)
			if err != nil || !ds.Connected || ds.IPv4.String() != tc.ip {
				t.Fatalf("data state %+v %v, want connected %s", ds, err, tc.ip)
			}
			if err := c.Disconnect(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if ds, _ := c.DataState(ctx, 1); ds.Connected {
				t.Fatal("still connected after Disconnect")
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func TestSIMStates(t *testing.T) {
	for _, tc := range []struct{ name, reply, want string }{
		{"cme numeric", "+CME ERROR: 10", "not_inserted"},
		{"cme textual", "+CME ERROR: SIM not inserted", "not_inserted"},
		{"pin", "+CPIN: SIM PIN", "pin_required"},
		{"failure numeric", "+CME ERROR: 13", "failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := sim.ParseProfile([]byte(`{"commands":[{"cmd":"AT+CPIN?","reply":["` + tc.reply + `"` + map[bool]string{true: `,"OK"`, false: ""}[strings.HasPrefix(tc.reply, "+CPIN")] + `]},{"cmd":"AT*","reply":["OK"]}]}`))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := sim.Start(ctx, p, sim.Options{})
			if err != nil {
				t.Fatal(err)
			}
			c := openSim(t, s)
			got, err := c.SIM(ctx)
			if err != nil || got != tc.want {
				t.Fatalf("SIM = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestErrorToEveryCommand(t *testing.T) {
	p, err := sim.ParseProfile([]byte(`{"commands":[{"cmd":"AT*","reply":["ERROR"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := sim.Start(ctx, p, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := OpenClient(s.Path(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	err = c.Init(ctx)
	var ae *at.Error
	if !errors.As(err, &ae) || ae.Code != "ERROR" || !strings.Contains(err.Error(), "ATE0Q0V1") {
		t.Fatalf("Init: %v, want ATE0Q0V1: ERROR", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
}

// A port that is not a modem (nothing answers) fails clearly within a few
// seconds.
func TestNotAModem(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	go func() { // swallow whatever is written, answer nothing
		buf := make([]byte, 512)
		for {
			if _, err := master.Read(buf); err != nil {
				return
			}
		}
	}()
	c, err := OpenClient(slave.Name(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	err = c.Init(context.Background())
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Init: %v, want ErrNoAnswer", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

// recLink records Up/Down calls.
type recLink struct {
	mu       sync.Mutex
	ups      []netip.Prefix
	downs    int
	upCalled chan struct{}
}

func newRecLink() *recLink { return &recLink{upCalled: make(chan struct{}, 100)} }

func (l *recLink) Up(_ context.Context, p netip.Prefix) error {
	l.mu.Lock()
	l.ups = append(l.ups, p)
	l.mu.Unlock()
	l.upCalled <- struct{}{}
	return nil
}

func (l *recLink) Down(context.Context) error {
	l.mu.Lock()
	l.downs++
	l.mu.Unlock()
	return nil
}

func (l *recLink) counts() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ups), l.downs
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 400*time.Millisecond
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	cfg.Logf = t.Logf
	m := NewManager(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Manager.Run did not return")
		}
	})
	return m
}

func TestManagerReconnectsAfterNWDeact(t *testing.T) {
	s, _ := startSim(t, "quectel-rm520n-nsa.json", sim.Options{})
	link := newRecLink()
	// A long poll interval: the URC, not the poll, must trigger this.
	m := runManager(t, Config{Port: s.Path(), Data: DataConfig{APN: "internet"}, Link: link, PollInterval: time.Hour})
	waitFor(t, "first data call", 10*time.Second, func() bool { return m.Status().State == StateConnected })
	if st := m.Status(); st.Reconnects != 0 || st.RAT != "NR5G-NSA" || *st.RSRP != -94 || st.Data.IPv4.String() != "10.110.61.83" {
		t.Fatalf("status %+v", st)
	}
	s.Inject(context.Background(), sim.Event{URC: []string{`+CGEV: NW DEACT "IP","10.110.61.83",1`}, Action: "data_down"})
	waitFor(t, "reconnect", 10*time.Second, func() bool { return m.Status().Reconnects == 1 && m.Status().State == StateConnected })
	ups, downs := link.counts()
	if ups != 2 || downs != 1 {
		t.Fatalf("link ups=%d downs=%d, want 2 and 1", ups, downs)
	}
}

func TestManagerPollBackstop(t *testing.T) {
	s, _ := startSim(t, "generic.json", sim.Options{})
	link := newRecLink()
	m := runManager(t, Config{Port: s.Path(), Data: DataConfig{APN: "internet"}, Link: link})
	waitFor(t, "first data call", 10*time.Second, func() bool { return m.Status().State == StateConnected })
	// The call drops without a URC (CGEREP not honoured): the poll notices.
	s.Inject(context.Background(), sim.Event{Action: "data_down"})
	waitFor(t, "reconnect by poll", 10*time.Second, func() bool { return m.Status().Reconnects == 1 && m.Status().State == StateConnected })
}

func TestManagerModemReset(t *testing.T) {
	s, _ := startSim(t, "quectel-ec25.json", sim.Options{})
	m := runManager(t, Config{Port: s.Path(), Data: DataConfig{APN: "internet"}, Link: newRecLink(), PollInterval: time.Hour})
	waitFor(t, "first data call", 10*time.Second, func() bool { return m.Status().State == StateConnected })
	s.Inject(context.Background(), sim.Event{Fault: "reset"})
	waitFor(t, "reconnect after reset", 10*time.Second, func() bool { return m.Status().Reconnects == 1 && m.Status().State == StateConnected })
}

// The port vanishes (USB re-enumeration) and comes back under another
// name; the Manager follows the symlink (a glob works the same way).
func TestManagerPortVanishesAndReturnsUnderNewName(t *testing.T) {
	link := filepath.Join(t.TempDir(), "modem-at")
	s, _ := startSim(t, "sierra-em7455.json", sim.Options{PortLink: link})
	first := s.Path()
	m := runManager(t, Config{Port: link, Data: DataConfig{APN: "internet"}, Link: newRecLink(), PollInterval: time.Hour})
	waitFor(t, "first data call", 10*time.Second, func() bool { return m.Status().State == StateConnected })
	if m.Status().Port != first {
		t.Fatalf("port %s, want %s", m.Status().Port, first)
	}
	// Hold the old name while the sim re-creates the pty, so the new one
	// cannot reuse it.
	hold, err := os.OpenFile(first, os.O_RDWR, 0)
	if err == nil {
		defer hold.Close()
	}
	changed := s.PathChanged()
	s.Inject(context.Background(), sim.Event{Fault: "vanish", For: sim.Duration(300 * time.Millisecond)})
	waitFor(t, "port lost", 5*time.Second, func() bool { return m.Status().State != StateConnected })
	<-changed
	waitFor(t, "reconnect on the new port", 15*time.Second, func() bool {
		st := m.Status()
		return st.State == StateConnected && st.Reconnects == 1
	})
	if got := m.Status().Port; got == first {
		t.Logf("pty name reused (%s); symlink re-resolution still exercised", got)
	}
}

// The lab profile drops the signal below -100 dBm and recovers on a
// schedule; the Manager's Status follows.
func TestLabProfileSignalSchedule(t *testing.T) {
	p, err := sim.LoadProfile(filepath.Join("testdata", "profiles", "lab-weak-signal.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Compress the schedule: same order, milliseconds instead of seconds.
	for i := range p.Schedule {
		p.Schedule[i].At /= 20
	}
	p.Repeat = 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := sim.Start(ctx, p, sim.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	m := runManager(t, Config{Port: s.Path(), Data: DataConfig{APN: "internet"}, Link: newRecLink(), PollInterval: 100 * time.Millisecond})
	waitFor(t, "weak signal", 10*time.Second, func() bool {
		st := m.Status()
		return st.RSSI != nil && *st.RSSI < -100 && *st.RSRP == -118
	})
	waitFor(t, "recovery", 10*time.Second, func() bool {
		st := m.Status()
		return st.RSSI != nil && *st.RSSI == -60
	})
	if m.Status().Reconnects < 1 {
		t.Fatalf("the scheduled NW DEACT did not cause a reconnect: %+v", m.Status())
	}
}
