package sqm

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lifeline-router/lifeline/vmtest"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const skipNoCake = "kernel has no sch_cake (host kernel); runs in the VM stage"

var nsSeq atomic.Int32

// lab is two namespaces joined by a veth: "up0" in ns (the uplink we shape) and "pe0" in peer.
type lab struct {
	ns, peer string
	fd       int
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip, tc) to read the kernel state back")
	}
	n := nsSeq.Add(1)
	l := &lab{ns: fmt.Sprintf("sqm%d-%d", os.Getpid(), n), peer: fmt.Sprintf("sqmp%d-%d", os.Getpid(), n)}
	run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns).Run() })
	run(t, "ip", "netns", "add", l.peer)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.peer).Run() })
	run(t, "ip", "-n", l.ns, "link", "add", "up0", "type", "veth", "peer", "name", "pe0", "netns", l.peer)
	run(t, "ip", "-n", l.ns, "addr", "add", "10.77.0.1/24", "dev", "up0")
	run(t, "ip", "-n", l.peer, "addr", "add", "10.77.0.2/24", "dev", "pe0")
	run(t, "ip", "-n", l.ns, "link", "set", "up0", "up")
	run(t, "ip", "-n", l.peer, "link", "set", "pe0", "up")
	fd, err := unix.Open("/run/netns/"+l.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open netns %s: %v", l.ns, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	l.fd = fd
	return l
}

func (l *lab) shaper(t *testing.T) *Shaper {
	t.Helper()
	s, err := New(Options{NetNS: l.fd, LoadModule: func(string) error { return errors.New("no modprobe in tests") }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sendFromPeer sends n UDP datagrams from the peer namespace to the shaped side.
func (l *lab) sendFromPeer(t *testing.T, n, size int) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	peer, err := netns.GetFromName(l.peer)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := netns.Set(peer); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp4", "10.77.0.1:9")
	netns.Set(orig)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		// The first datagrams may wait for ARP (which itself goes through the redirect);
		// a write error here is not the test's subject, the counters are.
		c.Write(buf)
	}
}

type jsonLink struct {
	Ifname string `json:"ifname"`
	Stats  struct {
		Rx struct{ Packets uint64 } `json:"rx"`
		Tx struct{ Packets uint64 } `json:"tx"`
	} `json:"stats64"`
}

func (l *lab) linkTxPackets(t *testing.T, dev string) uint64 {
	t.Helper()
	var ls []jsonLink
	if err := json.Unmarshal([]byte(run(t, "ip", "-n", l.ns, "-j", "-s", "link", "show", "dev", dev)), &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ip -j -s link show %s: %v %v", dev, err, ls)
	}
	return ls[0].Stats.Tx.Packets
}

func (l *lab) waitTx(t *testing.T, dev string, atLeast uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := l.linkTxPackets(t, dev)
		if got >= atLeast {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s tx packets = %d, want ≥ %d within 5s", dev, got, atLeast)
		}
		l.sendFromPeer(t, 5, 100)
		time.Sleep(20 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

// TestRedirectToIFB runs on the host: IFB, ingress qdisc and mirred exist there, only CAKE
// does not. Traffic entering up0 must leave through ifb-up0's egress.
func TestRedirectToIFB(t *testing.T) {
	l := newLab(t)
	s := l.shaper(t)
	idx, err := s.links.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second round must change nothing
		ifb, err := s.ensureIFB(IFBName("up0"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ensureRedirect("up0", idx.Attrs().Index, ifb); err != nil {
			t.Fatal(err)
		}
	}
	filters := run(t, "tc", "-n", l.ns, "filter", "show", "dev", "up0", "parent", "ffff:")
	if !strings.Contains(filters, "mirred (Egress Redirect to device ifb-up0)") {
		t.Fatalf("tc filter show: no redirect to ifb-up0:\n%s", filters)
	}
	if n := strings.Count(filters, "mirred"); n != 1 {
		t.Fatalf("tc filter show: %d mirred actions after two Ensure rounds, want 1:\n%s", n, filters)
	}
	qd := run(t, "tc", "-n", l.ns, "qdisc", "show", "dev", "up0", "ingress")
	if !strings.Contains(qd, "qdisc ingress ffff:") {
		t.Fatalf("tc qdisc show ingress: %s", qd)
	}
	before := l.linkTxPackets(t, "ifb-up0")
	l.sendFromPeer(t, 20, 200)
	l.waitTx(t, "ifb-up0", before+20)

	if err := s.Remove("up0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("up0"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if out, err := exec.Command("ip", "-n", l.ns, "link", "show", "ifb-up0").CombinedOutput(); err == nil {
		t.Fatalf("ifb-up0 still exists after Remove:\n%s", out)
	}
	if qd := run(t, "tc", "-n", l.ns, "qdisc", "show", "dev", "up0"); strings.Contains(qd, "ingress") {
		t.Fatalf("ingress qdisc left after Remove:\n%s", qd)
	}
}

// TestMissingCakeIsAnError runs where sch_cake is absent (the host) and checks the error names
// the module instead of silently doing nothing.
func TestMissingCakeIsAnError(t *testing.T) {
	l := newLab(t)
	s := l.shaper(t)
	err := s.Ensure(Shape{Device: "up0", Egress: Direction{Bandwidth: 20e6}})
	if err == nil {
		t.Skip("kernel has sch_cake; nothing to check here (TestCake* cover it)")
	}
	var mm *MissingModuleError
	if !errors.As(err, &mm) || mm.Module != "sch_cake" || !strings.Contains(err.Error(), "sch_cake") {
		t.Fatalf("Ensure without sch_cake: %v, want a MissingModuleError naming sch_cake", err)
	}
	if qd := run(t, "tc", "-n", l.ns, "qdisc", "show", "dev", "up0"); strings.Contains(qd, "cake") {
		t.Fatalf("cake present although Ensure failed:\n%s", qd)
	}
}

type jsonQdisc struct {
	Kind    string         `json:"kind"`
	Handle  string         `json:"handle"`
	Dev     string         `json:"dev"`
	Root    bool           `json:"root"`
	Options map[string]any `json:"options"`
	Bytes   uint64         `json:"bytes"`
	Packets uint64         `json:"packets"`
}

func (l *lab) rootQdisc(t *testing.T, dev string) jsonQdisc {
	t.Helper()
	var qs []jsonQdisc
	out := run(t, "tc", "-n", l.ns, "-j", "-s", "qdisc", "show", "dev", dev)
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		t.Fatalf("tc -j -s qdisc show dev %s: %v\n%s", dev, err, out)
	}
	for _, q := range qs {
		if q.Root {
			return q
		}
	}
	t.Fatalf("tc -j qdisc show dev %s: no root qdisc:\n%s", dev, out)
	return jsonQdisc{}
}

func checkCake(t *testing.T, q jsonQdisc, d Direction) {
	t.Helper()
	if q.Kind != "cake" || q.Handle != "ca:" {
		t.Fatalf("%s root = %s %s, want cake ca:", q.Dev, q.Kind, q.Handle)
	}
	// tc prints CAKE's bandwidth in JSON as the kernel's bytes/s.
	if bw, _ := q.Options["bandwidth"].(float64); uint64(bw)*8 != d.Bandwidth {
		t.Errorf("%s bandwidth = %v bytes/s, want %d bit/s", q.Dev, q.Options["bandwidth"], d.Bandwidth)
	}
	if ds, _ := q.Options["diffserv"].(string); ds != d.diffserv() {
		t.Errorf("%s diffserv = %v, want %s", q.Dev, q.Options["diffserv"], d.diffserv())
	}
}

func ensureOrSkip(t *testing.T, s *Shaper, sh Shape) {
	t.Helper()
	err := s.Ensure(sh)
	var mm *MissingModuleError
	if errors.As(err, &mm) && mm.Module == "sch_cake" {
		if vmtest.InVM() {
			t.Fatalf("our board kernel must have sch_cake: %v", err)
		}
		t.Skip(skipNoCake)
	}
	if err != nil {
		t.Fatalf("Ensure(%+v): %v", sh, err)
	}
}

func TestCakeEnsureReadBackChangeRemove(t *testing.T) {
	l := newLab(t)
	s := l.shaper(t)
	sh := Shape{
		Device:  "up0",
		Egress:  Direction{Bandwidth: 20e6, Diffserv: "diffserv4", AckFilter: true, Overhead: -4, MPU: 64, RTT: 50 * time.Millisecond, MinBandwidth: 5e6, MaxBandwidth: 80e6},
		Ingress: Direction{Bandwidth: 40e6, Diffserv: "besteffort", Wash: true},
	}
	ensureOrSkip(t, s, sh)
	eg, in := l.rootQdisc(t, "up0"), l.rootQdisc(t, "ifb-up0")
	checkCake(t, eg, sh.Egress)
	checkCake(t, in, sh.Ingress)
	text := run(t, "tc", "-n", l.ns, "qdisc", "show", "dev", "up0")
	for _, want := range []string{"bandwidth 20Mbit", "diffserv4", "ack-filter", "rtt 50", "overhead -4", "mpu 64"} {
		if !strings.Contains(text, want) {
			t.Errorf("tc qdisc show dev up0 lacks %q:\n%s", want, text)
		}
	}
	text = run(t, "tc", "-n", l.ns, "qdisc", "show", "dev", "ifb-up0")
	for _, want := range []string{"bandwidth 40Mbit", "besteffort", "wash", "ingress"} {
		if !strings.Contains(text, want) {
			t.Errorf("tc qdisc show dev ifb-up0 lacks %q:\n%s", want, text)
		}
	}

	// Traffic through the ingress CAKE so its counters are non-zero.
	l.sendFromPeer(t, 50, 500)
	l.waitTx(t, "ifb-up0", 50)
	st, err := s.Stats("up0", DirIngress)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets == 0 || len(st.Tins) != 1 {
		t.Fatalf("ingress stats: packets %d, %d tins (besteffort wants 1)", st.Packets, len(st.Tins))
	}
	if est, err := s.Stats("up0", DirEgress); err != nil || len(est.Tins) != 4 {
		t.Fatalf("egress stats: %v, %d tins (diffserv4 wants 4)", err, len(est.Tins))
	}

	// Idempotence: the same Shape again changes nothing, not even the counters.
	ensureOrSkip(t, s, sh)
	if again := l.rootQdisc(t, "ifb-up0"); again.Handle != in.Handle || again.Packets < st.Packets {
		t.Fatalf("second Ensure replaced ifb qdisc: %+v → %+v", in, again)
	}
	if n := strings.Count(run(t, "tc", "-n", l.ns, "filter", "show", "dev", "up0", "parent", "ffff:"), "mirred"); n != 1 {
		t.Fatalf("%d redirects after two Ensure, want 1", n)
	}

	// In-place rate change: same qdisc (handle), counters not reset, new rate read back.
	if err := s.SetRate("up0", DirIngress, 30e6); err != nil {
		t.Fatal(err)
	}
	after := l.rootQdisc(t, "ifb-up0")
	if after.Handle != in.Handle || after.Packets < st.Packets || after.Packets == 0 {
		t.Fatalf("SetRate replaced the qdisc or reset it: before %s %d pkts, after %s %d pkts", in.Handle, st.Packets, after.Handle, after.Packets)
	}
	checkCake(t, after, Direction{Bandwidth: 30e6, Diffserv: "besteffort"})
	if w, _ := after.Options["wash"].(bool); !w {
		t.Errorf("rate change lost wash: %v", after.Options)
	}
	if err := s.SetRate("up0", DirEgress, 90e6); err == nil {
		t.Error("SetRate above MaxBandwidth accepted")
	}
	if err := s.SetRate("up0", DirEgress, 0); err == nil {
		t.Error("SetRate(0) accepted")
	}
	// Ensure keeps an autorate direction's in-bounds rate (the controller owns it).
	if err := s.SetRate("up0", DirEgress, 33e6); err != nil {
		t.Fatal(err)
	}
	ensureOrSkip(t, s, sh)
	checkCake(t, l.rootQdisc(t, "up0"), Direction{Bandwidth: 33e6, Diffserv: "diffserv4"})

	// Turning ingress off removes IFB and redirect; Remove removes the rest.
	sh.Ingress = Direction{}
	ensureOrSkip(t, s, sh)
	if _, err := exec.Command("ip", "-n", l.ns, "link", "show", "ifb-up0").CombinedOutput(); err == nil {
		t.Fatal("ifb-up0 left after turning ingress off")
	}
	if err := s.Remove("up0"); err != nil {
		t.Fatal(err)
	}
	if q := l.rootQdisc(t, "up0"); q.Kind == "cake" {
		t.Fatalf("cake left on up0 after Remove: %+v", q)
	}
}

// TestVMCake runs the CAKE tests in the VM stage, on our board kernel (the
// host kernel has no sch_cake): qdisc and IFB set-up read back with tc, an
// in-place rate change that keeps the qdisc, and clean-up.
func TestVMCake(t *testing.T) {
	if vmtest.InVM() {
		t.Skip("the guest runs the CAKE tests themselves")
	}
	if testing.Short() {
		t.Skip("-short: VM stage")
	}
	if _, err := vmtest.DefaultKernel(); err != nil {
		t.Skipf("needs the board kernel (VM stage): %v", err)
	}
	vmtest.GoTest(t, vmtest.GoTestOptions{
		Run:   "^(TestCakeEnsureReadBackChangeRemove|TestRedirectToIFB)$",
		Tools: []string{"/usr/sbin/tc", "/bin/ip"},
	})
}
