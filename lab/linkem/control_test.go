package linkem

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestControlAPI(t *testing.T) {
	echo := echoServer(t)
	fiber := startRelay(t, echo, Params{Rate: 220e6, Delay: 2500 * time.Microsecond}, Params{Rate: 220e6}, 1)
	lte := startRelay(t, echo, Params{Rate: 20e6, Delay: 20 * time.Millisecond}, Params{Rate: 20e6}, 2)
	sock := filepath.Join(t.TempDir(), "linkem.sock")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, sock, map[string]*Relay{"fiber": fiber, "lte": lte}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := NewClient(sock)
	waitFor(t, 2*time.Second, "control socket", func() bool {
		var names []string
		return c.do(ctx, http.MethodGet, "/", nil, nil, &names) == nil && strings.Join(names, ",") == "fiber,lte"
	})
	fc, lc := c.Relay("fiber"), c.Relay("lte")

	want := Params{Rate: 100e6, Delay: 4 * time.Millisecond, Buffer: 1 << 20, Loss: 0.01, Overhead: 28}
	if err := fc.Set(ctx, Up, want); err != nil {
		t.Fatal(err)
	}
	if got := fiber.Params(Up); got != want {
		t.Errorf("relay has %v after Set, want %v", got, want)
	}
	if got, err := fc.Params(ctx, Up); err != nil || got != want {
		t.Errorf("Params = %v, %v; want %v", got, err, want)
	}
	if err := lc.SetRate(ctx, Down, 10e6); err != nil {
		t.Fatal(err)
	}
	if got := lte.Params(Down); got.Rate != 10e6 {
		t.Errorf("lte down rate %d after SetRate, want 10mbit", got.Rate)
	}
	if got := lte.Params(Up); got.Delay != 20*time.Millisecond || got.Rate != 20e6 {
		t.Errorf("SetRate on down changed up: %v", got)
	}
	if err := fc.SetLoss(ctx, Down, 0.05); err != nil || fiber.Params(Down).Loss != 0.05 {
		t.Errorf("SetLoss: %v, loss now %v", err, fiber.Params(Down).Loss)
	}

	// Bad input is refused whole, with the field named.
	err := fc.Update(ctx, Up, map[string]any{"rate": "30mbit", "loss": 2})
	if err == nil || !strings.Contains(err.Error(), "loss") {
		t.Errorf("Update with loss 2: err %v, want one naming loss", err)
	}
	if got := fiber.Params(Up); got != want {
		t.Errorf("refused update changed params to %v", got)
	}
	if err := c.do(ctx, http.MethodPost, "/fiber/params", map[string][]string{"dir": {"sideways"}}, []byte(`{}`), nil); err == nil || !strings.Contains(err.Error(), "dir") {
		t.Errorf("dir=sideways: err %v, want one naming dir", err)
	}
	if _, err := c.Relay("wifi").Stats(ctx); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown relay: err %v, want 404", err)
	}

	if err := lc.Blackhole(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !lte.Params(Up).Blackhole || !lte.Params(Down).Blackhole || fiber.Params(Up).Blackhole {
		t.Errorf("blackhole on lte: lte %v / %v, fiber %v", lte.Params(Up), lte.Params(Down), fiber.Params(Up))
	}
	cl := dial(t, lte)
	if _, err := ping(cl, 1, 300*time.Millisecond); err == nil {
		t.Error("ping through a blackholed relay came back")
	}
	if err := lc.Blackhole(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ping(cl, 2, time.Second); err != nil {
		t.Errorf("ping after blackhole off: %v", err)
	}
	s, err := lc.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Blackholed[Up] != 1 || s.Packets[Up] != 1 || s.Packets[Down] != 1 || s.Clients != 1 {
		t.Errorf("stats over the socket %+v: want 1 blackholed and 1 delivered each way, 1 client", s)
	}

	if err := lc.FollowTrace(ctx, Up, Trace{{0, 7e6}, {50 * time.Millisecond, 3e6}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "trace's last step", func() bool { return lte.Params(Up).Rate == 3e6 })
	if err := lc.StopTrace(ctx, Up); err != nil {
		t.Error(err)
	}
	err = c.do(ctx, http.MethodPost, "/lte/trace", map[string][]string{"dir": {"up"}}, []byte("0 1mbit\nx 2mbit\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad trace: err %v, want one naming line 2", err)
	}
}

func TestServeBadName(t *testing.T) {
	err := Serve(context.Background(), filepath.Join(t.TempDir(), "s"), map[string]*Relay{"a/b": nil})
	if err == nil || !strings.Contains(err.Error(), "a/b") {
		t.Errorf("Serve with name a/b: err %v", err)
	}
}
