package wifi

// The real WiFi test: two mac80211_hwsim radios, hostapd as a WPA3-SAE
// access point in one namespace (with a DHCP server), our Manager with the
// real wpa_supplicant on the other radio in a second namespace. It runs
// where mac80211_hwsim exists (the board kernel has it built in: the VM
// stage) and skips on this host, whose kernel has no wireless at all.
//
// Regulatory: the kernel's world domain forbids starting an AP on 5 and
// 6 GHz (NO-IR) and the VM has no regulatory.db, so the radios are created
// with hwsim's custom world domain 03, which allows 5150-5250 MHz and
// 5955-7125 MHz. The test tries 6 GHz first, then 5 GHz, then 2.4 GHz, and
// logs which band it got.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/dhcp4/dhcp4test"
	"github.com/lifeline-router/lifeline/uplinks/ethernet"
	"github.com/lifeline-router/lifeline/vmtest"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// From include/uapi/linux/mac80211_hwsim.h (drivers/net/wireless/virtual).
const (
	hwsimCmdNewRadio             = 4
	hwsimAttrChannels            = 9
	hwsimAttrRegCustomReg        = 12
	hwsimAttrDestroyRadioOnClose = 16
	hwsimAttrRadioName           = 17
	hwsimCustomWorld03           = 2 // index into hwsim_world_regdom_custom[]
)

func hwsimPresent() bool {
	if _, err := os.Stat("/sys/module/mac80211_hwsim"); err == nil {
		return true
	}
	// radios=0: load the module without creating radios of its own.
	return exec.Command("modprobe", "mac80211_hwsim", "radios=0").Run() == nil
}

// newRadio creates a hwsim radio named name that disappears when c closes.
func newRadio(t *testing.T, c *genetlink.Conn, fam genetlink.Family, name string) {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.String(hwsimAttrRadioName, name)
	ae.Uint32(hwsimAttrChannels, 1)
	ae.Uint32(hwsimAttrRegCustomReg, hwsimCustomWorld03)
	ae.Flag(hwsimAttrDestroyRadioOnClose, true)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Execute(genetlink.Message{Header: genetlink.Header{Command: hwsimCmdNewRadio, Version: fam.Version}, Data: b},
		fam.ID, netlink.Request|netlink.Acknowledge)
	// The kernel answers with the radio index as a positive "error";
	// the radio's sysfs entry is the real proof.
	if _, serr := os.Stat("/sys/class/ieee80211/" + name); serr != nil {
		t.Fatalf("HWSIM_CMD_NEW_RADIO %s: %v (sysfs: %v)", name, err, serr)
	}
}

// radioNetdev is the interface the radio created.
func radioNetdev(t *testing.T, phy string) string {
	t.Helper()
	var names []string
	waitFor(t, 5*time.Second, "netdev of "+phy, func() bool {
		ents, _ := os.ReadDir("/sys/class/ieee80211/" + phy + "/device/net")
		names = names[:0]
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return len(names) > 0
	})
	return names[0]
}

// moveWiphy moves phy (and its interfaces) into namespace ns.
func moveWiphy(t *testing.T, phy string, ns netns.NsHandle) {
	t.Helper()
	b, err := os.ReadFile("/sys/class/ieee80211/" + phy + "/index")
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	c, err := genetlink.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fam, err := c.GetFamily("nl80211")
	if err != nil {
		t.Fatalf("nl80211 family: %v", err)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.NL80211_ATTR_WIPHY, uint32(idx))
	ae.Uint32(unix.NL80211_ATTR_NETNS_FD, uint32(ns))
	data, _ := ae.Encode()
	if _, err := c.Execute(genetlink.Message{Header: genetlink.Header{Command: unix.NL80211_CMD_SET_WIPHY_NETNS, Version: fam.Version}, Data: data},
		fam.ID, netlink.Request|netlink.Acknowledge); err != nil {
		t.Fatalf("NL80211_CMD_SET_WIPHY_NETNS(%s): %v", phy, err)
	}
}

func namedNS(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

type apBand struct {
	band string
	conf string // hostapd lines for the band
}

var apBands = []apBand{
	{"6", "hw_mode=a\nop_class=131\nchannel=5\nieee80211ax=1\nsae_pwe=1\n"},
	{"5", "hw_mode=a\nchannel=36\nieee80211n=1\nsae_pwe=2\n"},
	{"2.4", "hw_mode=g\nchannel=1\nieee80211n=1\nsae_pwe=2\n"},
}

type hostapd struct {
	cmd  *exec.Cmd
	done chan error
	band string
	out  *lineTail
}

// startAP runs hostapd on iface in ns, trying the bands in order.
func startAP(t *testing.T, ns, iface, dir, ssid, password string) *hostapd {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("hostapd")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/hostapd"); err != nil {
			t.Skip("needs hostapd")
		}
	}
	var why []string
	for _, b := range apBands {
		conf := fmt.Sprintf("interface=%s\ndriver=nl80211\nctrl_interface=%s\nssid=%s\n%swpa=2\nwpa_key_mgmt=SAE\nrsn_pairwise=CCMP\nieee80211w=2\nsae_password=%s\n",
			iface, dir, ssid, b.conf, password)
		path := filepath.Join(dir, "hostapd-"+b.band+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		h := &hostapd{cmd: exec.Command("ip", "netns", "exec", ns, bin, path), done: make(chan error, 1), band: b.band, out: &lineTail{}}
		out, _ := h.cmd.StdoutPipe()
		h.cmd.Stderr = h.cmd.Stdout
		if err := h.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { h.out.copy(out); h.done <- h.cmd.Wait() }()
		if err := h.waitEnabled(filepath.Join(dir, iface)); err == nil {
			t.Logf("access point up on the %s GHz band (tried before: %v)", b.band, why)
			t.Cleanup(h.stop)
			return h
		} else {
			why = append(why, fmt.Sprintf("%s GHz: %v", b.band, err))
			h.stop()
		}
	}
	t.Fatalf("hostapd came up on no band: %v", why)
	return nil
}

func (h *hostapd) waitEnabled(ctrl string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-h.done:
			h.done <- err
			return fmt.Errorf("hostapd exited: %v (%s)", err, h.out)
		default:
		}
		if c, err := DialCtrl(ctrl); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			r, err := c.Request(ctx, "STATUS")
			cancel()
			c.Close()
			if err == nil && ParseKV(r)["state"] == "ENABLED" {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("not ENABLED within 15s: " + h.out.String())
}

func (h *hostapd) stop() {
	if h.cmd.Process != nil {
		h.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case err := <-h.done:
		h.done <- err
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
	}
}

func TestHwsimSAE(t *testing.T) {
	if !vmtest.InVM() && !hwsimPresent() {
		if testing.Short() {
			t.Skip("needs mac80211_hwsim (VM stage)")
		}
		if _, err := vmtest.DefaultKernel(); err != nil {
			t.Skipf("needs mac80211_hwsim (VM stage): %v", err)
		}
		vmtest.GoTest(t, vmtest.GoTestOptions{
			Tools:   []string{"/usr/sbin/hostapd", "/usr/sbin/wpa_supplicant", "/bin/ip"},
			Timeout: 5 * time.Minute,
		})
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	supplicant := supplicantBinary(t)
	c, err := genetlink.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // DESTROY_RADIO_ON_CLOSE removes the radios
	fam, err := c.GetFamily("MAC80211_HWSIM")
	if err != nil {
		t.Skipf("needs mac80211_hwsim (VM stage): genetlink family: %v", err)
	}
	id := os.Getpid()
	apPhy, staPhy := fmt.Sprintf("llap%d", id), fmt.Sprintf("llsta%d", id)
	newRadio(t, c, fam, apPhy)
	newRadio(t, c, fam, staPhy)
	apIf, staIf := radioNetdev(t, apPhy), radioNetdev(t, staPhy)
	apNS, staNS := fmt.Sprintf("llap%d", id), fmt.Sprintf("llsta%d", id)
	apH, staH := namedNS(t, apNS), namedNS(t, staNS)
	moveWiphy(t, apPhy, apH)
	moveWiphy(t, staPhy, staH)

	dir := t.TempDir()
	const ssid, password = "lifeline-6e", "correct horse battery"
	ap := startAP(t, apNS, apIf, filepath.Join(dir, "hostapd"), ssid, password)
	if out, err := exec.Command("ip", "-n", apNS, "addr", "add", "10.66.0.1/24", "dev", apIf).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v\n%s", err, out)
	}
	srv, err := dhcp4test.Start(dhcp4test.Options{NetNS: apH, Iface: apIf, ServerIP: netip.MustParseAddr("10.66.0.1"),
		Prefix: 24, Pool: netip.MustParseAddr("10.66.0.100"), Router: netip.MustParseAddr("10.66.0.1"), Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)

	k, err := ethernet.NewKernel(staH, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{
		Name: "wifi", Interface: staIf, Table: 102, RunDir: filepath.Join(dir, "sta"), StateDir: dir, Kernel: k,
		Wrap:        []string{"ip", "netns", "exec", staNS},
		Config:      Config{SSID: ssid, Password: password, Supplicant: supplicant, PollInterval: Duration(500 * time.Millisecond)},
		DHCPTimeout: time.Second, DHCPMinRetry: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	e := waitUp(t, m, true, 90*time.Second)
	// The up event comes from wpa_supplicant's CONNECTED; the signal
	// comes from the next SIGNAL_POLL (every PollInterval), so wait for it.
	st := m.Status()
	for deadline := time.Now().Add(5 * time.Second); st.SignalDBm == 0 && time.Now().Before(deadline); st = m.Status() {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("associated: %+v (event %q)", st, e.Reason)
	if st.SSID != ssid || st.KeyMgmt != "SAE" || st.Band != ap.band || st.SignalDBm == 0 {
		t.Errorf("status %+v: want SAE on the AP's %s GHz band with a signal", st, ap.band)
	}
	if !netip.MustParsePrefix("10.66.0.0/24").Contains(st.IP.Address.Addr()) {
		t.Errorf("address %v not from the AP's DHCP server", st.IP.Address)
	}
	out, _ := exec.Command("ip", "-n", staNS, "route", "show", "table", "102").CombinedOutput()
	if !strings.Contains(string(out), "default via 10.66.0.1 dev "+staIf) {
		t.Errorf("table 102:\n%s", out)
	}

	// The AP goes away: the uplink is reported down at once.
	stopAt := time.Now()
	ap.stop()
	e = waitUp(t, m, false, 30*time.Second)
	t.Logf("down %v after hostapd stopped: %s", e.At.Sub(stopAt).Round(time.Millisecond), e.Reason)
	if d := e.At.Sub(stopAt); d > 5*time.Second {
		t.Errorf("AP loss reported after %v", d)
	}
}
