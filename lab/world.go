package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/lifeline-router/lifeline/appliance/config"
)

// Addresses of the world; the concentrator's public address is the one the
// seed chapter uses.
const (
	ConcPublic     = "198.51.100.2"
	ISPPublic      = "198.51.100.1"
	ServiceAddress = "10.55.0.1"
	// UploadPort is where `lifeline-lab recv` listens on the service address.
	UploadPort = 5201
	// wgBasePort is the concentrator's UDP port for path index 1.
	wgBasePort = 51819
)

// Link is one ISP access line.
type Link struct {
	Rate uint64        // line rate, bit/s
	RTT  time.Duration // round trip through the relay, split evenly per direction
}

// Options describe a world. Zero fields get the seed's defaults.
type Options struct {
	Fiber, WiFi, LTE Link
	// WithWiFi adds the wifi0 uplink (a second primary); off by default so
	// the fiber→LTE story is clean.
	WithWiFi bool
	// ShaperShare is the router-side HTB rate as a share of the line rate.
	ShaperShare float64
	// ShaperQueue is the bfifo behind the HTB class, in time at the
	// shaper's rate.
	ShaperQueue time.Duration
	// ShaperQueueMin is the least the bfifo holds, in bytes (default
	// 64 KiB). The product shapes with CAKE, whose AQM lets a burst through
	// and drops only a queue that stands; a bfifo of 5 ms at LTE's 19
	// Mbit/s (12 KB) tail-dropped the backup's first flight at every
	// failover (initcwnd 32, ~47 KB) and cost a round trip or an RTO.
	ShaperQueueMin int
	// BackupQueueMin, when set, replaces ShaperQueueMin on the backup
	// (LTE): the bfifo is the one place where the lab's SQM stand-in and
	// the product's CAKE differ most for a failover, since the backup's
	// subflow starts from idle and its start-up burst is what a tail-drop
	// queue drops and CAKE's AQM (which drops only a queue that has stood
	// above its 5 ms target for 100 ms) lets through.
	BackupQueueMin int
	// ShaperBurst is added to every path's bfifo limit on top of
	// ShaperQueue's worth (0: none). It stands for the burst CAKE lets
	// through: wireguard-go hands each batch it encrypted to the kernel as
	// one UDP GSO packet of up to 64 KiB, a bfifo tail-drops such a packet
	// whole, and CAKE instead splits it and drops only a queue that stands
	// above its target.
	//
	// At the fiber's 220 Mbit/s the 5 ms bfifo (130 KB) drops such a
	// packet, ~24 datagrams, about 70 times a second: 10 % of the
	// uploader's segments were retransmissions (nstat TcpRetransSegs
	// against TcpOutSegs). With 96 KiB more (60 trials) fiber goodput rose
	// from 0.86-0.89 to 0.93-0.95 of the ceiling and the cut's tail went
	// (p100 140 to 98 ms), but the loaded fiber's RTT varied more, so the
	// RTT-derived probe timeout caught blackholes later (p100 168 to 202
	// ms), and the deeper LTE queue held more at the restore (fail-back
	// p100 0.88 to 1.01 s). The short queue stays the default.
	// Splitting the GSO packets instead, as CAKE does (a TBF leaf with a
	// one-frame bucket), made every datagram cross the veth and the ISP's
	// stack alone and lost a third of the fiber's rate to CPU on 2 cores.
	ShaperBurst int
	// ISPBuffer is the relay's (ISP-side) buffer in time at the line rate.
	ISPBuffer time.Duration
	// LabBin is the lifeline-lab binary (relay, send, recv subcommands);
	// default: this executable.
	LabBin string
	// Log receives progress and the children's stderr; nil discards.
	Log io.Writer
	// Seed seeds the relays' loss generators.
	Seed uint64
	// Netem makes each ISP link a pair of kernel netem qdiscs (downlink on
	// the ISP end of the veth, uplink on an IFB fed from its ingress)
	// instead of a userspace relay. It needs sch_netem, IFB and matchall:
	// our board kernel in the VM has them, the host kernel does not.
	Netem bool
	// CAKE shapes the router side with the supervisor's own SQM (CAKE at
	// the shaper share, from the uplink's "sqm" config) instead of the
	// lab's HTB + bfifo stand-in. Needs sch_cake (the VM).
	CAKE bool
	// NoShaper leaves the router's egress unshaped: the queue then builds
	// in the ISP's deep buffer, and what it holds at a cut is what MPTCP
	// later re-injects from a stale acknowledged point.
	NoShaper bool
	// Sysctls ("key=value") are set in the router and conc namespaces
	// after the lab's own, e.g. net.mptcp.reinject_limit=0 to run the
	// stock re-injection on our kernel.
	Sysctls []string
}

func (o *Options) setDefaults() error {
	if o.Fiber.Rate == 0 {
		o.Fiber.Rate = 220e6
	}
	if o.Fiber.RTT == 0 {
		o.Fiber.RTT = 5 * time.Millisecond
	}
	if o.WiFi.Rate == 0 {
		o.WiFi.Rate = 200e6
	}
	if o.WiFi.RTT == 0 {
		o.WiFi.RTT = 8 * time.Millisecond
	}
	if o.LTE.Rate == 0 {
		o.LTE.Rate = 20e6
	}
	if o.LTE.RTT == 0 {
		o.LTE.RTT = 40 * time.Millisecond
	}
	if o.ShaperShare == 0 {
		o.ShaperShare = 0.95
	}
	if o.ShaperQueue == 0 {
		o.ShaperQueue = 5 * time.Millisecond
	}
	if o.ShaperQueueMin == 0 {
		o.ShaperQueueMin = 64 << 10
	}
	if o.ShaperBurst < 0 {
		return fmt.Errorf("ShaperBurst %d: want ≥ 0", o.ShaperBurst)
	}
	if o.ISPBuffer == 0 {
		o.ISPBuffer = 100 * time.Millisecond
	}
	if o.LabBin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("os.Executable: %w", err)
		}
		o.LabBin = exe
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch {
	case o.ShaperShare <= 0 || o.ShaperShare > 1:
		return fmt.Errorf("shaper share %v: want 0 < share ≤ 1", o.ShaperShare)
	case o.Fiber.RTT < 0 || o.LTE.RTT < 0 || o.WiFi.RTT < 0:
		return errors.New("rtt: must not be negative")
	case o.Fiber.Rate < 1e5 || o.LTE.Rate < 1e5 || o.WiFi.Rate < 1e5:
		return errors.New("rate: below 100kbit")
	}
	return nil
}

// Path is one uplink of the world, from the router through its relay to the
// concentrator's port for it.
type Path struct {
	Name     string // uplink name in the config: fiber, wifi, lte
	Dev      string // router-side device: fiber0, wifi0, wwan0
	ISPDev   string // ISP-side end of the veth
	Index    int    // 1, 2, 3: 100.64.<i>.0/24 and 10.55.<i>.0/24
	Role     config.Role
	Priority int
	Link     Link
	Port     int    // concentrator's WireGuard port (and the relay's)
	WG       string // router-side WireGuard interface (unique machine-wide)
	ConcWG   string // concentrator-side WireGuard interface

	relaySock string
}

// RouterAddr is the router's address on the uplink.
func (p *Path) RouterAddr() string { return fmt.Sprintf("100.64.%d.2", p.Index) }

// Gateway is the ISP's address on the uplink, where the relay listens.
func (p *Path) Gateway() string { return fmt.Sprintf("100.64.%d.1", p.Index) }

// TunnelAddr is the router's tunnel address with prefix.
func (p *Path) TunnelAddr() string { return fmt.Sprintf("10.55.%d.2/24", p.Index) }

// TunnelPeer is the concentrator's tunnel address.
func (p *Path) TunnelPeer() string { return fmt.Sprintf("10.55.%d.1", p.Index) }

// ShaperRate is the router-side HTB rate in bit/s.
func (w *World) ShaperRate(p *Path) uint64 {
	if w.opt.NoShaper {
		return p.Link.Rate
	}
	return uint64(float64(p.Link.Rate) * w.opt.ShaperShare)
}

// World is a built lab. Close tears it down; it is safe to call twice.
type World struct {
	ID                 string
	Router, ISP, Conc  string // namespace names
	Dir                string // temp dir: keys, configs, logs, sockets
	Paths              []*Path
	opt                Options
	cleanup            cleanupStack
	nft                *nftShell
	ispNl              *netlink.Handle
	routerNl           *netlink.Handle
	mu                 sync.Mutex
	procs              []*proc
	ConfigFile, Events string
	// LossRate is what the loss fault puts on a path (0.05 = 5 %).
	LossRate  float64
	closeOnce sync.Once
	closeErr  error
}

// Path returns the named path (fiber, wifi, lte) or nil.
func (w *World) Path(name string) *Path {
	for _, p := range w.Paths {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// NamePrefix starts every namespace the lab creates; tests look for
// leftovers with it.
const NamePrefix = "llab-"

func newID() string {
	var b [3]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])[:5]
}

// Build creates the namespaces, links, addresses, shapers, the nftables
// shell and one relay per path. On error everything built so far is torn
// down again.
func Build(ctx context.Context, opt Options) (w *World, err error) {
	if err := opt.setDefaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces)")
	}
	id := newID()
	w = &World{
		ID:     id,
		Router: NamePrefix + id + "-router",
		ISP:    NamePrefix + id + "-isp",
		Conc:   NamePrefix + id + "-conc",
		opt:    opt,
	}
	w.cleanup.log = opt.Log
	defer func() {
		if err != nil {
			w.Close()
			w = nil
		}
	}()
	w.Dir, err = os.MkdirTemp("", "lifeline-lab-"+id+"-")
	if err != nil {
		return w, fmt.Errorf("MkdirTemp: %w", err)
	}
	dir := w.Dir
	w.cleanup.push("temp dir", func() error { return os.RemoveAll(dir) })

	add := func(name, dev, isp string, idx int, role config.Role, prio int, l Link, wgp string) {
		w.Paths = append(w.Paths, &Path{
			Name: name, Dev: dev, ISPDev: isp, Index: idx, Role: role, Priority: prio, Link: l,
			Port: wgBasePort + idx, WG: wgp + id, ConcWG: "c" + wgp + id,
		})
	}
	add("fiber", "fiber0", "ifiber0", 1, config.RolePrimary, 300, opt.Fiber, "wgf")
	if opt.WithWiFi {
		add("wifi", "wifi0", "iwifi0", 2, config.RolePrimary, 200, opt.WiFi, "wgw")
	}
	add("lte", "wwan0", "iwwan0", 3, config.RoleBackup, 100, opt.LTE, "wgl")

	for _, ns := range []string{w.Router, w.ISP, w.Conc} {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return w, err
		}
		ns := ns
		w.cleanup.push("netns "+ns, func() error {
			_, err := run(context.Background(), "ip", "netns", "del", ns)
			return err
		})
		if _, err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return w, err
		}
	}
	// One batch per namespace keeps the build to a few forks.
	var rb, ib, cb strings.Builder
	for _, p := range w.Paths {
		fmt.Fprintf(&rb, "link add %s type veth peer name %s netns %s\n", p.Dev, p.ISPDev, w.ISP)
		fmt.Fprintf(&rb, "addr add %s/24 dev %s\n", p.RouterAddr(), p.Dev)
		fmt.Fprintf(&rb, "link set %s up\n", p.Dev)
		fmt.Fprintf(&ib, "addr add %s/24 dev %s\n", p.Gateway(), p.ISPDev)
		fmt.Fprintf(&ib, "link set %s up\n", p.ISPDev)
	}
	fmt.Fprintf(&ib, "link add tconc type veth peer name eth0 netns %s\n", w.Conc)
	fmt.Fprintf(&ib, "addr add %s/24 dev tconc\n", ISPPublic)
	fmt.Fprintf(&ib, "link set tconc up\n")
	fmt.Fprintf(&cb, "addr add %s/24 dev eth0\n", ConcPublic)
	fmt.Fprintf(&cb, "link set eth0 up\n")
	fmt.Fprintf(&cb, "route add 100.64.0.0/16 via %s\n", ISPPublic)
	for _, b := range []struct{ ns, cmds string }{{w.Router, rb.String()}, {w.ISP, ib.String()}, {w.Conc, cb.String()}} {
		if err := ipBatch(ctx, b.ns, b.cmds); err != nil {
			return w, err
		}
	}
	sys := []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.ip_forward=1"}
	tcp := []string{"net.ipv4.tcp_congestion_control=bbr", "net.mptcp.enabled=1"}
	tcp = append(tcp, opt.Sysctls...)
	for _, s := range []struct {
		ns   string
		keys []string
	}{{w.Router, append(sys, tcp...)}, {w.ISP, sys}, {w.Conc, append(sys, tcp...)}} {
		if _, err := run(ctx, "ip", append([]string{"netns", "exec", s.ns, "sysctl", "-qw"}, s.keys...)...); err != nil {
			return w, err
		}
	}
	for _, p := range w.Paths {
		if opt.CAKE || opt.NoShaper {
			break // the supervisor's SQM shapes (see Config), or nothing does
		}
		if err := w.shape(ctx, p); err != nil {
			return w, err
		}
	}
	if opt.Netem {
		if err := w.buildNetemLinks(ctx); err != nil {
			return w, err
		}
		for _, p := range w.Paths {
			if err := w.netemLink(ctx, p, 0); err != nil {
				return w, err
			}
		}
	}
	if w.ispNl, err = nlHandle(w.ISP); err != nil {
		return w, err
	}
	if w.routerNl, err = nlHandle(w.Router); err != nil {
		return w, err
	}
	w.cleanup.push("netlink handles", func() error { w.ispNl.Close(); w.routerNl.Close(); return nil })
	if err := w.startNft(ctx); err != nil {
		return w, err
	}
	for _, p := range w.Paths {
		if opt.Netem {
			break
		}
		if err := w.startRelay(ctx, p); err != nil {
			return w, err
		}
	}
	fmt.Fprintf(opt.Log, "lab %s: world built (%s, %s, %s)\n", id, w.Router, w.ISP, w.Conc)
	return w, nil
}

func ipBatch(ctx context.Context, ns, cmds string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch (%q): %w: %s", ns, cmds, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func nlHandle(ns string) (*netlink.Handle, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("netns.GetFromName(%s): %w", ns, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink.NewHandleAt(%s): %w", ns, err)
	}
	return nl, nil
}

// ShaperQueueBytes is the limit of p's bfifo: ShaperQueue at the shaper's
// rate plus the burst allowance, at least ShaperQueueMin.
func (w *World) ShaperQueueBytes(p *Path) int {
	least := w.opt.ShaperQueueMin
	if p.Role == config.RoleBackup && w.opt.BackupQueueMin > 0 {
		least = w.opt.BackupQueueMin
	}
	return max(int(float64(w.ShaperRate(p))/8*w.opt.ShaperQueue.Seconds())+w.opt.ShaperBurst, least)
}

// shape installs the router-side SQM stand-in on p's egress: HTB at the
// shaper share of the line rate with a bfifo of ShaperQueue behind it, so
// the queue lives in the router (short) and not in the ISP's deep buffer.
func (w *World) shape(ctx context.Context, p *Path) error {
	rate := w.ShaperRate(p)
	limit := w.ShaperQueueBytes(p)
	cmds := fmt.Sprintf("qdisc replace dev %[1]s root handle 1: htb default 10\n"+
		"class replace dev %[1]s parent 1: classid 1:10 htb rate %[2]dbit ceil %[2]dbit quantum 60000\n"+
		"qdisc replace dev %[1]s parent 1:10 handle 10: bfifo limit %[3]d\n", p.Dev, rate, limit)
	cmd := exec.CommandContext(ctx, "tc", "-n", w.Router, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tc -n %s -batch (%q): %w: %s", w.Router, cmds, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ispBufferBytes is the relay's buffer: ISPBuffer worth of the line rate.
func (w *World) ispBufferBytes(p *Path) int {
	return int(float64(p.Link.Rate) / 8 * w.opt.ISPBuffer.Seconds())
}

// Close tears everything down: processes (supervisor first, so it removes
// its own state), relays, namespaces, wireguard-go sockets, the temp dir.
func (w *World) Close() error {
	w.closeOnce.Do(func() {
		w.closeErr = w.cleanup.run()
		for _, p := range w.Paths {
			for _, ifn := range []string{p.WG, p.ConcWG} {
				sock := filepath.Join("/var/run/wireguard", ifn+".sock")
				if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
					w.closeErr = errors.Join(w.closeErr, err)
				}
			}
		}
	})
	return w.closeErr
}

// proc is a child process in a namespace whose stderr (and optionally
// stdout) lines are logged and watched.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	mu      sync.Mutex
	tail    []string
	waiters []lineWaiter
	lines   chan string // stdout lines when wanted
}

type lineWaiter struct {
	substr string
	ch     chan struct{}
}

// start runs bin args... inside ns. Lines on stderr go to the log file and
// are kept for error messages; stdout lines go to p.lines when wantStdout.
func (w *World) start(name, ns string, wantStdout bool, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(filepath.Join(w.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	// Pdeathsig: if the lab itself is killed with SIGKILL, its children
	// must not outlive it holding namespaces and UAPI sockets.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	var stdout io.ReadCloser
	if wantStdout {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
		p.lines = make(chan string, 4096)
	} else {
		cmd.Stdout = logf
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(cmd.Args, " "), err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintf(logf, "%s %s\n", time.Now().Format("15:04:05.000000"), line)
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 20 {
				p.tail = p.tail[1:]
			}
			for i := 0; i < len(p.waiters); i++ {
				if strings.Contains(line, p.waiters[i].substr) {
					close(p.waiters[i].ch)
					p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
					i--
				}
			}
			p.mu.Unlock()
		}
	}()
	if stdout != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(p.lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				select {
				case p.lines <- sc.Text():
				default: // a slow reader loses progress lines, never blocks the child
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	w.mu.Lock()
	w.procs = append(w.procs, p)
	w.mu.Unlock()
	w.cleanup.push("process "+name, func() error { return p.stop(5 * time.Second) })
	return p, nil
}

// waitLine waits until the child prints a stderr line containing substr.
func (p *proc) waitLine(ctx context.Context, substr string, timeout time.Duration) error {
	ch := make(chan struct{})
	p.mu.Lock()
	found := false
	for _, l := range p.tail {
		if strings.Contains(l, substr) {
			found = true
		}
	}
	if !found {
		p.waiters = append(p.waiters, lineWaiter{substr, ch})
	}
	p.mu.Unlock()
	if found {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.name, p.err, substr, p.lastLines())
	case <-t.C:
		return fmt.Errorf("%s did not print %q within %v:\n%s", p.name, substr, timeout, p.lastLines())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *proc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "  " + strings.Join(p.tail, "\n  ")
}

// stop sends SIGTERM to the child's process group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s ignored SIGTERM for %v, killed", p.name, grace)
}

// ParseAddrPort is netip.MustParseAddrPort without the panic.
func parseAP(s string) (netip.AddrPort, error) { return netip.ParseAddrPort(s) }
