package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/lifeline-router/lifeline/modem/sim"
)

func startSim(t *testing.T, profile string) string {
	t.Helper()
	p, err := sim.LoadProfile(filepath.Join("..", "testdata", "profiles", profile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := sim.Start(ctx, p, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Path()
}

func TestInfoJSON(t *testing.T) {
	port := startSim(t, "quectel-rm520n-nsa.json")
	var out bytes.Buffer
	if err := Main([]string{"modem", "info", "--port", port, "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	for k, want := range map[string]any{"manufacturer": "Quectel", "rat": "NR5G-NSA", "registration": "home", "rssi_dbm": -58.0, "nr_sinr_db": 18.0} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	data, _ := m["data"].(map[string]any)
	if data == nil || data["connected"] != false || data["ipv4"] != nil {
		t.Errorf("data = %v", m["data"])
	}
}

func TestInfoText(t *testing.T) {
	port := startSim(t, "quectel-rm520n-sa.json")
	var out bytes.Buffer
	if err := Main([]string{"info", "--port", port}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Access: NR5G-SA", "RSSI unknown", "RSRP -104 dBm", "Data: down"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestConnect(t *testing.T) {
	port := startSim(t, "generic.json")
	var out bytes.Buffer
	if err := Main([]string{"connect", "--port", port, "--apn", "internet", "--user", "u", "--password", "p", "--auth", "chap", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"data":{"connected":true,"ipv4":"10.110.61.83"}`) {
		t.Fatalf("output: %s", out.String())
	}
}

func TestBadArgs(t *testing.T) {
	for _, args := range [][]string{nil, {"frob"}, {"info"}, {"connect", "--port", "/dev/null"}, {"connect", "--port", "x", "--apn", "a", "--auth", "md5"}, {"info", "--bogus"}} {
		if err := Main(args, &bytes.Buffer{}); err == nil {
			t.Errorf("Main(%q): no error", args)
		}
	}
}

func TestNotAModemFailsFast(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	go func() {
		b := make([]byte, 256)
		for {
			if _, err := master.Read(b); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	err = Main([]string{"info", "--port", slave.Name()}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not a modem") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}
