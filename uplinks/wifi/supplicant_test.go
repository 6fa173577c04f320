package wifi

// The real wpa_supplicant binary under our supervision. Without a radio
// (no mac80211_hwsim on the host) it runs with its "wired" driver on a
// veth in a namespace: that still proves it accepts the configuration we
// generate, that we find and attach to its control socket, read STATUS,
// and restart it when it dies. Association itself is the VM stage's
// hwsim test.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/ethernet"
	"github.com/vishvananda/netns"
)

var nsSeq atomic.Int32

func supplicantBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"wpa_supplicant", "/usr/sbin/wpa_supplicant", "/sbin/wpa_supplicant"} {
		if b, err := exec.LookPath(p); err == nil {
			return b
		}
	}
	t.Skip("needs wpa_supplicant (apt-get install wpasupplicant)")
	return ""
}

// vethNS makes a namespace with veth w0 (peer w1 up) and returns its name.
func vethNS(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	name := fmt.Sprintf("llwifi%d-%d", os.Getpid(), nsSeq.Add(1))
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run("-n", name, "link", "add", "w0", "type", "veth", "peer", "name", "w1")
	run("-n", name, "link", "set", "w1", "up")
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return name, h
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func TestRealSupplicantSupervised(t *testing.T) {
	bin := supplicantBinary(t)
	ns, h := vethNS(t)
	k, err := ethernet.NewKernel(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{
		Name: "wifi", Interface: "w0", Table: 102, RunDir: t.TempDir(), Kernel: k,
		Wrap: []string{"ip", "netns", "exec", ns},
		// All bands: no freq_list, which the wired driver (freq 0) would never match.
		Config:     Config{SSID: "lifeline", Password: `correct "horse"`, Country: "DE", Supplicant: bin, Driver: "wired"},
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			cancel()
			<-done
			stopped = true
		}
	}
	t.Cleanup(stop)

	// wpa_supplicant read our config (it exits on any line it does not
	// understand) and answers on its control socket.
	waitFor(t, 15*time.Second, "STATUS from wpa_supplicant", func() bool {
		st := m.Status()
		return st.SSID == "lifeline" && st.PID != 0
	})
	st := m.Status()
	if st.State == "" || st.State == "STOPPED" {
		t.Errorf("wpa_state %q", st.State)
	}
	if fi, err := os.Stat(m.ConfPath()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file %s: %v %v (want mode 0600: it holds the password)", m.ConfPath(), fi.Mode(), err)
	}

	// Killed: restarted with backoff and re-attached.
	first := st.PID
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "restart", func() bool {
		st := m.Status()
		return st.Restarts == 1 && st.PID != 0 && st.PID != first && st.SSID == "lifeline"
	})
	second := m.Status().PID

	// Stopped with the manager: no wpa_supplicant left behind.
	stop()
	waitFor(t, 5*time.Second, "wpa_supplicant gone", func() bool { return !alive(first) && !alive(second) })
}

// A supplicant that cannot start (no such interface) is retried with
// backoff and its complaint surfaces in the status.
func TestRealSupplicantFailsToStart(t *testing.T) {
	bin := supplicantBinary(t)
	ns, h := vethNS(t)
	k, err := ethernet.NewKernel(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{
		Name: "wifi", Interface: "nosuch0", Table: 102, RunDir: t.TempDir(), Kernel: k,
		Wrap:       []string{"ip", "netns", "exec", ns},
		Config:     Config{SSID: "lifeline", Password: "correct horse", Supplicant: bin, Driver: "wired"},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, 15*time.Second, "two restarts", func() bool { return m.Status().Restarts >= 2 })
	if st := m.Status(); !strings.Contains(st.LastError, "nosuch0") || st.Up {
		t.Errorf("status %+v: want the supplicant's complaint about nosuch0", st)
	}
}

// Every shape of generated config is accepted by the real binary (it
// refuses to start on a line it does not understand).
func TestRealSupplicantAcceptsGeneratedConfigs(t *testing.T) {
	bin := supplicantBinary(t)
	for _, c := range []Config{
		{SSID: "lifeline", Password: "correct horse", Bands: []string{"6", "5"}, BSSID: "02:00:00:00:01:00", Hidden: true, Country: "DE"},
		{SSID: "lifeline", Security: "owe", Bands: []string{"6"}},
		{SSID: "lifeline", Password: "ünïcödé pass", Bands: []string{"2.4"}},
	} {
		ns, h := vethNS(t)
		k, err := ethernet.NewKernel(h, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Supplicant, c.Driver = bin, "wired"
		m, err := New(Options{Name: "wifi", Interface: "w0", Table: 102, RunDir: t.TempDir(), Kernel: k,
			Wrap: []string{"ip", "netns", "exec", ns}, Config: c, MinBackoff: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		waitFor(t, 15*time.Second, fmt.Sprintf("%+v answering", c), func() bool {
			st := m.Status()
			return st.PID != 0 && st.State != "STOPPED" && st.State != ""
		})
		if st := m.Status(); st.Restarts != 0 {
			t.Errorf("%+v: %d restarts, last error %s", c, st.Restarts, st.LastError)
		}
		cancel()
		<-done
	}
}
