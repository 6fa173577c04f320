package wg

// The integration tests need one WireGuard device per network namespace.
// wireguard-go opens its TUN and UDP sockets from many goroutines, which the
// Go runtime spreads over OS threads, and a network namespace belongs to a
// thread: setns on a locked thread in this process would leave some of
// those sockets in the wrong namespace. So each side runs in its own
// process started with `ip netns exec NS` (the whole process then lives in
// NS) — the test binary itself, re-executed with helperEnv set, driven over
// stdin/stdout with one JSON request per line. The test process stays in the
// host namespace and reaches the userspace devices through their UAPI
// sockets in /var/run/wireguard, which `ip netns exec` does not hide.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const (
	helperEnv     = "LIFELINE_WG_TEST_HELPER"
	helperModeEnv = "LIFELINE_WG_TEST_MODE"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

type request struct {
	Op     string
	Config *Config      `json:",omitempty"`
	Name   string       `json:",omitempty"`
	Addr   string       `json:",omitempty"`
	Size   int          `json:",omitempty"`
	Key    *wgtypes.Key `json:",omitempty"`
}

type response struct {
	Err    string          `json:",omitempty"`
	Device *wgtypes.Device `json:",omitempty"`
	Mode   string          `json:",omitempty"`
}

// helperMain serves requests until stdin closes, then closes its Manager,
// so a test that dies still takes its devices down with it.
func helperMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mode := ModeUserspace
	switch os.Getenv(helperModeEnv) {
	case "auto":
		mode = ModeAuto
	case "kernel":
		mode = ModeKernel
	}
	m := NewManager(log, mode)
	defer m.Close()
	dec := json.NewDecoder(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if !errors.Is(err, io.EOF) {
				log.Error("helper: decode request", "err", err)
				return 1
			}
			return 0
		}
		var resp response
		var err error
		switch req.Op {
		case "ensure":
			err = m.Ensure(*req.Config)
		case "remove":
			err = m.Remove(req.Name)
		case "device":
			resp.Device, err = m.Device(req.Name)
		case "mode":
			resp.Mode = m.Mode(req.Name)
		case "close":
			err = m.Close()
		case "echo":
			err = echoServer(req.Addr)
		case "tcp":
			err = tcpRoundTrip(req.Addr, req.Size)
		case "benchdevice":
			// Time Device here, next to the device, not across the pipe.
			start := time.Now()
			for i := 0; i < req.Size && err == nil; i++ {
				_, err = m.Device(req.Name)
			}
			resp.Mode = time.Since(start).String()
		case "straypeer":
			// Drift made behind the Manager's back, in this namespace.
			err = addPeer(req.Name, *req.Key)
		default:
			err = fmt.Errorf("unknown op %q", req.Op)
		}
		if err != nil {
			resp.Err = err.Error()
		}
		if err := enc.Encode(resp); err != nil {
			log.Error("helper: encode response", "err", err)
			return 1
		}
	}
}

func echoServer(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return nil
}

func addPeer(dev string, key wgtypes.Key) error {
	c, err := wgctrl.New()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.ConfigureDevice(dev, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: key}}})
}

// tcpRoundTrip sends size random bytes to an echo server and checks that the
// same bytes come back.
func tcpRoundTrip(addr string, size int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	payload := make([]byte, size)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return errors.New("echoed bytes differ from sent bytes")
	}
	return nil
}

// helper is the test's end of one helper process.
type helper struct {
	t     testing.TB
	ns    string
	stdin io.WriteCloser
	resps chan response
	done  chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startHelper runs a helper process in ns; mode is "userspace", "auto" or
// "kernel". It is stopped (and its devices closed) at cleanup.
func startHelper(t testing.TB, ns, mode string) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperModeEnv+"="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper in %s: %v", ns, err)
	}
	h := &helper{t: t, ns: ns, stdin: stdin, resps: make(chan response), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var r response
			if err := dec.Decode(&r); err != nil {
				return
			}
			h.resps <- r
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("helper in %s: %v", ns, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("helper in %s did not exit after stdin closed; killing it", ns)
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("helper in %s stderr:\n%s", ns, stderr.String())
		}
	})
	return h
}

func (h *helper) call(req request) response {
	h.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		h.t.Fatalf("marshal %s: %v", req.Op, err)
	}
	if _, err := h.stdin.Write(append(b, '\n')); err != nil {
		h.t.Fatalf("helper in %s: send %s: %v", h.ns, req.Op, err)
	}
	select {
	case r := <-h.resps:
		return r
	case <-h.done:
		h.t.Fatalf("helper in %s exited during %s", h.ns, req.Op)
	case <-time.After(60 * time.Second):
		h.t.Fatalf("helper in %s: no answer to %s within 60s", h.ns, req.Op)
	}
	return response{}
}

// must fails the test when the helper reported an error.
func (h *helper) must(req request) response {
	h.t.Helper()
	r := h.call(req)
	if r.Err != "" {
		h.t.Fatalf("helper in %s: %s %s: %s", h.ns, req.Op, req.Name, r.Err)
	}
	return r
}

func (h *helper) ensure(cfg Config) { h.t.Helper(); h.must(request{Op: "ensure", Config: &cfg}) }

func (h *helper) device(name string) *wgtypes.Device {
	h.t.Helper()
	return h.must(request{Op: "device", Name: name}).Device
}

// --- host-side plumbing ---

func requireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces and TUN devices")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip: not in PATH")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun for wireguard-go: %v", err)
	}
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNS creates a network namespace with a name unique to this test process
// and deletes it at cleanup, also after a failure.
func newNS(t testing.TB, tag string) string {
	t.Helper()
	name := fmt.Sprintf("lfwg-%d-%s", os.Getpid(), tag)
	exec.Command("ip", "netns", "del", name).Run() // left over from a killed run with a recycled pid
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// ifName returns an interface name unique on the host: UAPI sockets are
// shared by all namespaces, and other tests may run in parallel.
func ifName(t testing.TB, tag string) string {
	name := fmt.Sprintf("lw%d%s", os.Getpid(), tag)
	if len(name) > 15 {
		t.Fatalf("interface name %q too long", name)
	}
	t.Cleanup(func() {
		// Only a helper that was killed leaves its socket behind.
		os.Remove(uapiPath(name))
	})
	return name
}

// waitFor polls cond until it succeeds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type ipLink struct {
	IfIndex   int      `json:"ifindex"`
	IfName    string   `json:"ifname"`
	MTU       int      `json:"mtu"`
	Flags     []string `json:"flags"`
	LinkType  string   `json:"link_type"`
	AddrInfo  []ipAddr `json:"addr_info"`
	OperState string   `json:"operstate"`
	Stats64   struct {
		TX struct {
			Packets int `json:"packets"`
		} `json:"tx"`
	} `json:"stats64"`
}

type ipAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	PrefixLen int    `json:"prefixlen"`
	Scope     string `json:"scope"`
}

// showLink returns what `ip -j -s addr show` says about dev in ns, or an
// error when it does not exist.
func showLink(ns, dev string) (*ipLink, error) {
	out, err := exec.Command("ip", "-n", ns, "-j", "-s", "addr", "show", "dev", dev).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip -n %s addr show dev %s: %v: %s", ns, dev, err, bytes.TrimSpace(out))
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return nil, fmt.Errorf("ip -j output for %s: %v: %s", dev, err, out)
	}
	return &links[0], nil
}

func mustShowLink(t *testing.T, ns, dev string) *ipLink {
	t.Helper()
	l, err := showLink(ns, dev)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
