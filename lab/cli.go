package lab

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/lifeline-router/lifeline/appliance/config"
	"io"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lifeline-router/lifeline/lab/linkem"
)

const usage = `usage: lifeline-lab <command> [flags]

commands:
  failover   build the world, run one upload through a fault, print the result
  demo       the 1.5 GB fiber-cut demo with a table and a plot in build/demo/
  bench      20 trials per scenario into build/bench/failover.json
  rtt        build the world and check the idle RTT of every path
  reinjection  stock vs patched MPTCP re-injection on our kernel -> build/bench/reinjection.json
  vm         run failover, bench, demo or reinjection inside our kernel under qemu
             (kernel WireGuard, netem ISP links, CAKE): lifeline-lab vm -- failover ...
  relay      (internal) one path's link emulator, run in the ISP namespace
  send       (internal) the MPTCP uploader, run in the router namespace
  recv       (internal) the MPTCP receiver, run in the concentrator namespace

Run "lifeline-lab <command> -h" for a command's flags.
`

// Main runs the lifeline-lab command line. It returns an error for the
// caller to print and exit non-zero with; ctx is cancelled on Ctrl-C so every
// command unwinds through its cleanup.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "failover":
		return cmdFailover(ctx, rest, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "bench":
		return cmdBench(ctx, rest, stdout, stderr)
	case "rtt":
		return cmdRTT(ctx, rest, stdout, stderr)
	case "vm":
		return cmdVM(ctx, rest, stdout, stderr)
	case "reinjection":
		return cmdReinjection(ctx, rest, stdout, stderr)
	case "relay":
		return cmdRelay(ctx, rest, stderr)
	case "send":
		return cmdSend(ctx, rest, stderr)
	case "recv":
		return cmdRecv(ctx, rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lifeline-lab "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses flags and refuses positional arguments, so a typo like
// "--size 200 MB" is an error rather than a silently ignored "MB".
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%s: %w", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (flags only)", fs.Name(), fs.Arg(0))
	}
	return nil
}

// sizeFlag reads "200MB", "1.5GB", "64MiB" or a byte count. MB and GB are
// decimal as on a firmware download page.
type sizeFlag int64

func (s *sizeFlag) String() string { return FormatSize(int64(*s)) }
func (s *sizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// sizeOrZeroFlag is a sizeFlag that also takes "0" (to turn a default off).
type sizeOrZeroFlag struct{ sizeFlag }

func (s *sizeOrZeroFlag) Set(v string) error {
	if strings.TrimSpace(v) == "0" {
		s.sizeFlag = 0
		return nil
	}
	return s.sizeFlag.Set(v)
}

// ParseSize reads a byte size such as 200MB, 1.5GB, 64MiB or 1000000.
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	units := []struct {
		suf  string
		mult float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSuffix(t, u.suf), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(t, "eExXpP_") {
		return 0, fmt.Errorf("size %q: want a number with B, kB, MB, GB, KiB, MiB or GiB", v)
	}
	n := f * mult
	if n < 1 || n > 1e13 {
		return 0, fmt.Errorf("size %q: out of range 1B..10TB", v)
	}
	return int64(n), nil
}

// FormatSize writes n in decimal units.
func FormatSize(n int64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', -1, 64) + "GB"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "MB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

type rateFlag uint64

func (r *rateFlag) String() string { return linkem.FormatRate(uint64(*r)) }
func (r *rateFlag) Set(v string) error {
	n, err := linkem.ParseRate(v)
	if err != nil {
		return err
	}
	if n < 1e5 {
		return fmt.Errorf("rate %q: below 100kbit", v)
	}
	*r = rateFlag(n)
	return nil
}

// durFlag is a non-negative duration.
type durFlag time.Duration

func (d *durFlag) String() string { return time.Duration(*d).String() }
func (d *durFlag) Set(v string) error {
	x, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	if x < 0 {
		return fmt.Errorf("duration %q: must not be negative", v)
	}
	*d = durFlag(x)
	return nil
}

// worldFlags are the flags every world-building command shares.
type worldFlags struct {
	fiber, lte, wifi          rateFlag
	fiberRTT, lteRTT, wifiRTT durFlag
	withWiFi                  bool
	shaper                    float64
	bin                       string
	verbose                   bool
	netem, cake, noShaper     bool
	sysctls                   sysctlFlag
	ispBuffer, shaperQueue    durFlag
	shaperQueueMin            sizeFlag
	backupQueueMin            sizeFlag
	shaperBurst               sizeOrZeroFlag
}

// sysctlFlag collects repeated --sysctl key=value.
type sysctlFlag []string

func (s *sysctlFlag) String() string { return strings.Join(*s, ",") }
func (s *sysctlFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" || val == "" || strings.ContainsAny(k, " /") {
		return fmt.Errorf("sysctl %q: want key=value, e.g. net.mptcp.reinject_limit=0", v)
	}
	*s = append(*s, v)
	return nil
}

func addWorldFlags(fs *flag.FlagSet) *worldFlags {
	w := &worldFlags{fiber: 220e6, lte: 20e6, wifi: 200e6,
		fiberRTT: durFlag(5 * time.Millisecond), lteRTT: durFlag(40 * time.Millisecond), wifiRTT: durFlag(8 * time.Millisecond)}
	fs.Var(&w.fiber, "fiber", "fiber line rate")
	fs.Var(&w.lte, "lte", "LTE line rate")
	fs.Var(&w.wifi, "wifi-rate", "WiFi line rate (with --wifi)")
	fs.Var(&w.fiberRTT, "fiber-rtt", "fiber round-trip time")
	fs.Var(&w.lteRTT, "lte-rtt", "LTE round-trip time")
	fs.Var(&w.wifiRTT, "wifi-rtt", "WiFi round-trip time (with --wifi)")
	fs.BoolVar(&w.withWiFi, "wifi", false, "add the wifi0 uplink (a second primary)")
	fs.Float64Var(&w.shaper, "shaper", 0.95, "router-side HTB rate as a share of the line rate")
	fs.StringVar(&w.bin, "lifeline", "bin/lifeline", "the lifeline binary (supervisor and concentrator)")
	fs.BoolVar(&w.verbose, "v", false, "log the lab's steps to stderr")
	fs.BoolVar(&w.netem, "netem", false, "ISP links as kernel netem qdiscs instead of relays (needs sch_netem: run in the VM, see `lifeline-lab vm`)")
	fs.BoolVar(&w.cake, "cake", false, "router-side shaping by the supervisor's CAKE instead of the lab's HTB (needs sch_cake)")
	fs.BoolVar(&w.noShaper, "no-shaper", false, "leave the router's egress unshaped (the queue builds in the ISP's buffer)")
	fs.Var(&w.sysctls, "sysctl", "key=value set in the router and conc namespaces (repeatable)")
	fs.Var(&w.ispBuffer, "isp-buffer", "the ISP side's buffer per path, in time at its line rate (0: 100ms)")
	fs.Var(&w.shaperQueue, "shaper-queue", "the bfifo behind the router's HTB, in time at the shaper's rate (0: 5ms)")
	fs.Var(&w.shaperQueueMin, "shaper-queue-min", "the least that bfifo holds, bytes (0: 64KiB, the backup's initial window of 32 frames fits)")
	fs.Var(&w.backupQueueMin, "backup-queue-min", "the least the backup's (LTE's) bfifo holds, bytes (0: as --shaper-queue-min)")
	fs.Var(&w.shaperBurst, "shaper-burst", "added to every bfifo's limit for wireguard-go's UDP GSO bursts, which CAKE would let through (0: none; 96KiB measured in the README)")
	return w
}

func (f *worldFlags) options(stderr io.Writer) (Options, error) {
	if f.shaper <= 0 || f.shaper > 1 {
		return Options{}, fmt.Errorf("--shaper %v: want 0 < share ≤ 1", f.shaper)
	}
	o := Options{
		Fiber:          Link{uint64(f.fiber), time.Duration(f.fiberRTT)},
		LTE:            Link{uint64(f.lte), time.Duration(f.lteRTT)},
		WiFi:           Link{uint64(f.wifi), time.Duration(f.wifiRTT)},
		WithWiFi:       f.withWiFi,
		ShaperShare:    f.shaper,
		Netem:          f.netem,
		CAKE:           f.cake,
		NoShaper:       f.noShaper,
		Sysctls:        f.sysctls,
		ISPBuffer:      time.Duration(f.ispBuffer),
		ShaperQueue:    time.Duration(f.shaperQueue),
		ShaperQueueMin: int(f.shaperQueueMin),
		BackupQueueMin: int(f.backupQueueMin),
		ShaperBurst:    int(f.shaperBurst.sizeFlag),
		Seed:           uint64(time.Now().UnixNano()),
	}
	if f.verbose {
		o.Log = stderr
	}
	return o, nil
}

func (f *worldFlags) lifelineBin() (string, error) {
	if _, err := os.Stat(f.bin); err != nil {
		return "", fmt.Errorf("--lifeline %s: %w (run `make build` first)", f.bin, err)
	}
	return f.bin, nil
}

func cmdRTT(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rtt", stderr)
	wf := addWorldFlags(fs)
	n := fs.Int("probes", 50, "probes per path")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n < 4 {
		return fmt.Errorf("--probes %d: want at least 4", *n)
	}
	o, err := wf.options(stderr)
	if err != nil {
		return err
	}
	w, err := Build(ctx, o)
	if err != nil {
		return err
	}
	defer w.Close()
	res, err := w.MeasureRTT(ctx, *n, 10*time.Millisecond)
	if err != nil {
		return err
	}
	bad := 0
	for _, r := range res {
		if !r.OK {
			bad++
		}
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(res)
	} else {
		for _, r := range res {
			fmt.Fprintf(stdout, "%-6s set %6.2f ms  min %6.2f  median %6.2f  p99 %6.2f  max %6.2f  (%d probes) ok=%v\n",
				r.Path, r.SetMs, r.MinMs, r.MedianMs, r.P99Ms, r.MaxMs, r.Probes, r.OK)
		}
	}
	if bad > 0 {
		return fmt.Errorf("rtt: %d path(s) outside 10 %% or 1 ms of the setting", bad)
	}
	return nil
}

func cmdRelay(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("relay", stderr)
	name := fs.String("name", "path", "relay name on the control socket")
	listen := fs.String("listen", "", "address:port the router's WireGuard sends to")
	target := fs.String("target", "", "concentrator address:port")
	var rate rateFlag
	fs.Var(&rate, "rate", "line rate, both directions")
	var delay durFlag
	fs.Var(&delay, "delay", "one-way delay, each direction")
	buffer := fs.Int("buffer", 0, "ISP buffer in bytes, each direction")
	overhead := fs.Int("overhead", relayOverhead, "bytes added per datagram for rate accounting")
	sock := fs.String("socket", "", "control socket path")
	seed := fs.Uint64("seed", 1, "loss generator seed")
	if err := parse(fs, args); err != nil {
		return err
	}
	la, err := netip.ParseAddrPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", *listen, err)
	}
	ta, err := netip.ParseAddrPort(*target)
	if err != nil {
		return fmt.Errorf("--target %q: %w", *target, err)
	}
	if *sock == "" {
		return errors.New("--socket: missing")
	}
	p := linkem.Params{Rate: uint64(rate), Delay: time.Duration(delay), Buffer: *buffer, Overhead: *overhead}
	if err := p.Validate(); err != nil {
		return err
	}
	r, err := linkem.NewRelay(la, ta, p, p, *seed)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- r.Run(ctx) }()
	go func() { errc <- linkem.Serve(ctx, *sock, map[string]*linkem.Relay{*name: r}) }()
	// Serve creates the socket quickly; wait for it before saying ready.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(*sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay: control socket %s did not appear", *sock)
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintf(stderr, "relay: ready %s -> %s (%v)\n", la, ta, p)
	err = <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

func cmdSend(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("send", stderr)
	to := fs.String("to", fmt.Sprintf("%s:%d", ServiceAddress, UploadPort), "receiver address")
	size := sizeFlag(200e6)
	fs.Var(&size, "size", "bytes to upload")
	seed := fs.Uint64("seed", 1, "payload seed")
	out := fs.String("out", "", "summary JSON file")
	var sndbuf sizeFlag
	fs.Var(&sndbuf, "sndbuf", "SO_SNDBUF (0: the kernel's autotuning)")
	cc := fs.String("cc", "", "TCP_CONGESTION of the upload socket (\"\": the namespace's default)")
	if err := parse(fs, args); err != nil {
		return err
	}
	return Send(ctx, *to, int64(size), *seed, int(sndbuf), *cc, *out, stderr)
}

func cmdRecv(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("recv", stderr)
	listen := fs.String("listen", fmt.Sprintf("%s:%d", ServiceAddress, UploadPort), "listen address")
	out := fs.String("out", "", "summary JSON file")
	if err := parse(fs, args); err != nil {
		return err
	}
	return Recv(ctx, *listen, *out, stdout, stderr)
}

func cmdFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("failover", stderr)
	wf := addWorldFlags(fs)
	fo := addFailoverFlags(fs)
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	series := fs.Bool("series", false, "keep the 100 ms goodput series in the JSON")
	plot := fs.String("plot", "", "write a goodput-over-time SVG to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	o, err := fo.options(wf, stderr)
	if err != nil {
		return err
	}
	res, err := Failover(ctx, o)
	if ctx.Err() != nil {
		return ctx.Err() // interrupted: the lab is torn down, a partial result would mislead
	}
	if res != nil && *plot != "" {
		if werr := os.WriteFile(*plot, []byte(plotSVG(res)), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	if res != nil {
		if !*series {
			res.Series, res.SubflowSeries = nil, nil
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(res)
		} else {
			printResult(stdout, res)
		}
	}
	if err == nil && res != nil && (res.Hung || !res.SHA256Match || !res.ConnectionSurvived) {
		err = fmt.Errorf("failover %s: hung=%v sha256_match=%v connection_survived=%v", res.Scenario, res.Hung, res.SHA256Match, res.ConnectionSurvived)
	}
	return err
}

type failoverFlags struct {
	scenario                         string
	size                             sizeFlag
	cutAt, restoreAfter, flap, stall durFlag
	holdDown, minTimeout             durFlag
	noNudge, keepBacklog             bool
	modemSim                         string
	loss                             float64
	sndbuf                           sizeFlag
	initCwnd                         int
	maxSndbuf, minRcvbuf             sizeFlag
	traceFault, traceRestore         durFlag
	cycles                           int
	cc                               string
}

func addFailoverFlags(fs *flag.FlagSet) *failoverFlags {
	f := &failoverFlags{size: 200e6, cutAt: durFlag(3 * time.Second), restoreAfter: durFlag(5 * time.Second),
		flap: durFlag(200 * time.Millisecond), stall: durFlag(10 * time.Second)}
	fs.StringVar(&f.scenario, "scenario", "cut", "fault: cut, blackhole, flap, loss or none")
	fs.Var(&f.size, "size", "upload size (200MB, 1.5GB, ...)")
	fs.Var(&f.cutAt, "cut-at", "when the fault starts after the upload started")
	fs.Var(&f.restoreAfter, "restore-after", "how long the fault lasts")
	fs.Var(&f.flap, "flap-period", "spacing of the flap's down/up/down")
	fs.Var(&f.stall, "stall-timeout", "fail as hung after this long without a new byte")
	fs.Var(&f.holdDown, "hold-down", "supervisor's fail-back hold-down (0: the config default)")
	fs.Var(&f.minTimeout, "min-timeout", "floor of the supervisor's probe timeout (0: the config default)")
	fs.BoolVar(&f.noNudge, "no-nudge", false, "turn off the supervisor's DATA_ACK nudge (for comparison)")
	fs.BoolVar(&f.keepBacklog, "keep-backup-backlog", false, "turn off the supervisor's fail-back flush of the backup's queued data (failover.keep_backup_backlog, for comparison)")
	fs.Var(percentFlag{&f.loss}, "loss", "random loss for --scenario loss, both directions (e.g. 5%)")
	fs.StringVar(&f.modemSim, "modem", "", "bin/lifeline-modemsim: LTE comes up through a simulated modem's data call")
	fs.Var(&f.sndbuf, "sndbuf", "SO_SNDBUF on the uploader's MPTCP socket (0: the kernel's autotuning; the kernel copies it to every subflow)")
	fs.IntVar(&f.initCwnd, "backup-initcwnd", 0, "the supervisor's failover.backup_initcwnd (0: the config default)")
	fs.Var(&f.maxSndbuf, "max-sndbuf", "failover.max_sndbuf at both ends: the cap on each TCP socket's autotuned send buffer (0: derived from the SQM rates, on the host from the lab's HTB rates)")
	fs.Var(&f.traceRestore, "trace-restore", "the same from the restore on, into restore_trace (0: off)")
	fs.Var(&f.minRcvbuf, "min-rcvbuf", "failover.min_rcvbuf at both ends: the receive buffer new TCP sockets start with (0: twice the send-buffer cap; 128KiB is the kernel's own, which leaves a subflow joining at fail-back a ~76 KB window)")
	fs.StringVar(&f.cc, "cc", "", "the uploader's congestion control: bbr (the lab's default), cubic or reno")
	fs.IntVar(&f.cycles, "cycles", 1, "fault/restore cycles in the one upload, --restore-after apart; after each restore the result's cycles lists the router's subflows (1 to 100)")
	fs.Var(&f.traceFault, "trace-fault", "sample `ss -tinmM` of the router and the concentrator for this long after the fault starts, into the result's fault_trace (0: off)")
	return f
}

// tweak applies the failover flags to the generated supervisor config.
func (f *failoverFlags) tweak(c *config.Config) {
	holdDown(time.Duration(f.holdDown))(c)
	if f.minTimeout > 0 {
		c.Failover.MinTimeout = config.Duration(f.minTimeout)
	}
	if f.noNudge {
		c.Failover.Nudge = config.NudgeOff
	}
	c.Failover.KeepBackupBacklog = f.keepBacklog
	if f.initCwnd != 0 {
		c.Failover.BackupInitCwnd = f.initCwnd
	}
	if f.maxSndbuf != 0 {
		c.Failover.MaxSndbuf = int(f.maxSndbuf)
	}
	if f.minRcvbuf != 0 {
		c.Failover.MinRcvbuf = int(f.minRcvbuf)
	}
}

func (f *failoverFlags) options(wf *worldFlags, stderr io.Writer) (FailoverOptions, error) {
	sc, err := ParseFault(f.scenario)
	if err != nil {
		return FailoverOptions{}, fmt.Errorf("--scenario: %w", err)
	}
	if f.cutAt == 0 || f.restoreAfter == 0 || f.stall == 0 {
		return FailoverOptions{}, errors.New("--cut-at, --restore-after and --stall-timeout must be positive")
	}
	wo, err := wf.options(stderr)
	if err != nil {
		return FailoverOptions{}, err
	}
	bin, err := wf.lifelineBin()
	if err != nil {
		return FailoverOptions{}, err
	}
	o := FailoverOptions{
		World:        wo,
		Lifeline:     LifelineOptions{Bin: bin, Tweak: f.tweak, ModemSim: f.modemSim},
		Loss:         f.loss,
		Scenario:     sc,
		Size:         int64(f.size),
		CutAt:        time.Duration(f.cutAt),
		RestoreAfter: time.Duration(f.restoreAfter),
		FlapPeriod:   time.Duration(f.flap),
		StallTimeout: time.Duration(f.stall),
		SendBuffer:   int64(f.sndbuf),
		TraceFault:   time.Duration(f.traceFault),
		TraceRestore: time.Duration(f.traceRestore),
		Cycles:       f.cycles,
		CC:           f.cc,
	}
	switch f.cc {
	case "", "bbr", "cubic", "reno":
	default:
		return o, fmt.Errorf("--cc %q: want bbr, cubic or reno", f.cc)
	}
	if f.cycles < 1 || f.cycles > 100 {
		return o, fmt.Errorf("--cycles %d: want 1 to 100", f.cycles)
	}
	if f.cycles > 1 && sc == FaultNone {
		return o, errors.New("--cycles: --scenario none has no fault to repeat")
	}
	if n := int64(f.maxSndbuf); n != 0 && (n < config.MaxSndbufMin || n > config.MaxSndbufMax) {
		return o, fmt.Errorf("--max-sndbuf %d: want %s to %s (0: derived from the SQM rates)", n, FormatSize(config.MaxSndbufMin), FormatSize(config.MaxSndbufMax))
	}
	if n := int64(f.minRcvbuf); n != 0 && (n < config.MinRcvbufMin || n > config.MinRcvbufMax) {
		return o, fmt.Errorf("--min-rcvbuf %d: want %s to %s (0: twice the send-buffer cap)", n, FormatSize(config.MinRcvbufMin), FormatSize(config.MinRcvbufMax))
	}
	if f.initCwnd < 0 || f.initCwnd > 1024 {
		return o, fmt.Errorf("--backup-initcwnd %d: want 1 to 1024 segments (0: the default)", f.initCwnd)
	}
	if sc == FaultFlap && 2*o.FlapPeriod >= o.RestoreAfter {
		return o, fmt.Errorf("--restore-after %v must exceed two --flap-period (%v)", o.RestoreAfter, 2*o.FlapPeriod)
	}
	return o, nil
}

func printResult(w io.Writer, r *Result) {
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f ms", *p)
	}
	fmt.Fprintf(w, "scenario %s: %s sent, %s received, sha256 match %v, connection survived %v, hung %v\n",
		r.Scenario, FormatSize(r.BytesSent), FormatSize(r.BytesReceived), r.SHA256Match, r.ConnectionSurvived, r.Hung)
	fmt.Fprintf(w, "stall: fault %.1f ms, max %.1f ms, after restore %.1f ms; fail-back %s\n", r.FaultStallMs, r.MaxStallMs, r.RestoreStallMs, f(r.FailbackMs))
	fmt.Fprintf(w, "breakdown: detected %s, endpoint removed %s, first LTE byte %s, first new byte %s; duplicate segments %d\n",
		f(r.Breakdown.DetectedMs), f(r.Breakdown.EndpointRemovedMs), f(r.Breakdown.FirstLTEByteMs), f(r.Breakdown.FirstNewByteMs), r.DuplicateData)
	fmt.Fprintf(w, "goodput: fiber %.1f Mbit/s (ceiling %.1f), LTE %.1f (ceiling %.1f), restored %.1f\n",
		r.FiberMbps, r.FiberCeilingMbps, r.LTEMbps, r.LTECeilingMbps, r.RestoreMbps)
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
}

// percentFlag reads "5%" or "0.05".
type percentFlag struct{ v *float64 }

func (p percentFlag) String() string {
	if p.v == nil {
		return "0%"
	}
	return strconv.FormatFloat(*p.v*100, 'g', -1, 64) + "%"
}

func (p percentFlag) Set(s string) error {
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil {
		return fmt.Errorf("%q is not a loss rate like 5%%", s)
	}
	if pct {
		v /= 100
	}
	if v < 0 || v >= 1 {
		return fmt.Errorf("%q: loss must be in [0%%, 100%%)", s)
	}
	*p.v = v
	return nil
}
