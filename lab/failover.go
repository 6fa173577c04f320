package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/lab/linkem"
	"github.com/lifeline-router/lifeline/uplinks/mptcp"
)

// FailoverOptions describe one upload through one fault.
type FailoverOptions struct {
	World    Options
	Lifeline LifelineOptions
	Scenario Fault
	Size     int64
	// CutAt is when the fault starts, after the upload started.
	CutAt time.Duration
	// RestoreAfter is how long the fault lasts.
	RestoreAfter time.Duration
	// FlapPeriod is the spacing of a flap's down/up/down.
	FlapPeriod time.Duration
	// StallTimeout fails the run as hung when no new byte arrives for
	// this long.
	StallTimeout time.Duration
	// Timeout bounds the whole transfer (0: from the rates and size).
	Timeout time.Duration
	// Progress, when set, is called about every 20 ms with the receiver's
	// byte count and the phase ("fiber", "fault", "restored").
	Progress func(bytes int64, phase string)
	Seed     uint64
	// Loss is the loss fault's random loss rate (default 5 %).
	Loss float64
	// SendBuffer is the uploader's SO_SNDBUF (0: the kernel's autotuning).
	SendBuffer int64
	// CC is the uploader's congestion control ("": the namespaces' bbr).
	CC string
	// TraceFault samples the router's `ss -tinM` every few ms for the
	// first TraceFault of the fault (0: off): how much each subflow
	// holds unsent, its window, and the connection's snd_una, to see
	// what re-injection hands to the backup and when a DATA_ACK moves it.
	TraceFault time.Duration
	// TraceRestore does the same from the restore on (ms after the
	// restore), to see how the primary's new subflow takes over.
	TraceRestore time.Duration
	// Cycles repeats the fault and its restore this many times in the one
	// upload (0 or 1: once), RestoreAfter apart, checking RestoreAfter
	// after each restore that every path's subflow is back (Result.Cycles).
	// Stalls and fail-back are measured on the first cycle (restore_mbps
	// then spans the later ones); the later cycles are about what a long
	// upload through several faults needs: every subflow back, the backup
	// ready for the next fault.
	Cycles int
}

// CycleCheck is the router's MPTCP connection some time after a restore.
type CycleCheck struct {
	Cycle int `json:"cycle"`
	// AfterRestoreMs is when the check ran, after that cycle's restore.
	AfterRestoreMs float64 `json:"after_restore_ms"`
	// Subflows are the fully established subflows by path, "lte backup"
	// for one either end marked backup.
	Subflows []string `json:"subflows"`
	// JoinsRejected is the concentrator's MPJoinRejected so far.
	JoinsRejected int64  `json:"joins_rejected"`
	Error         string `json:"error,omitempty"`
}

// cycleCheck lists the router's MPTCP subflows by path.
func (w *World) cycleCheck(cycle int, restored time.Time) CycleCheck {
	c := CycleCheck{Cycle: cycle, AfterRestoreMs: float64(time.Since(restored).Microseconds()) / 1000, Subflows: []string{}}
	if m, err := readNetstat(w.Conc); err == nil {
		c.JoinsRejected = m["MPTcpExt.MPJoinRejected"]
	}
	pm, err := w.routerPM()
	if err != nil {
		c.Error = err.Error()
		return c
	}
	defer pm.Close()
	sfs, err := pm.Subflows()
	if err != nil {
		c.Error = err.Error()
		return c
	}
	for _, sf := range sfs {
		if !sf.FullyEstablished {
			continue
		}
		name := sf.Local.Addr().String()
		for _, p := range w.Paths {
			if netip.MustParsePrefix(p.TunnelAddr()).Addr() == sf.Local.Addr() {
				name = p.Name
			}
		}
		if sf.Backup {
			name += " backup"
		}
		c.Subflows = append(c.Subflows, name)
	}
	slices.Sort(c.Subflows)
	return c
}

// Breakdown accounts for the fault's stall, each in ms after the fault.
type Breakdown struct {
	// DetectedMs: the supervisor's first uplink_down for the fiber.
	DetectedMs *float64 `json:"detected_ms"`
	// EndpointRemovedMs: its endpoint_removed for the fiber.
	EndpointRemovedMs *float64 `json:"endpoint_removed_ms"`
	// FirstLTEByteMs: the LTE tunnel interface's tx counter first grew by
	// more than a probe (sampled about every millisecond).
	FirstLTEByteMs *float64 `json:"first_lte_byte_ms"`
	// FirstNewByteMs: the receiver got data again, ending the fault's stall.
	FirstNewByteMs *float64 `json:"first_new_byte_ms"`
}

// SSSample is one `ss -tinM` of the router at Ms after the fault, and
// one of the concentrator right after it: a stall at the MPTCP level is
// either data the receiver lacks or a DATA_ACK it has not sent, and only
// the two ends side by side tell which.
type SSSample struct {
	Ms   float64 `json:"ms"`
	Out  string  `json:"ss"`
	Conc string  `json:"conc_ss,omitempty"`
}

// traceSS samples the sockets of the router and of the concentrator until
// ctx ends or d has passed since t0. Each sample forks ss twice: a few ms
// in the VM, so the samples are as dense as that allows, not a fixed grid.
func (w *World) traceSS(ctx context.Context, t0 time.Time, d time.Duration) []SSSample {
	var out []SSSample
	for time.Since(t0) < d && ctx.Err() == nil {
		at := time.Since(t0)
		b, err := exec.CommandContext(ctx, "ss", "-N", w.Router, "-tinmMH", "state", "established").Output()
		if err != nil {
			break
		}
		c, err := exec.CommandContext(ctx, "ss", "-N", w.Conc, "-tinmMH", "state", "established").Output()
		if err != nil {
			break
		}
		out = append(out, SSSample{Ms: float64(at.Microseconds()) / 1000, Out: string(b), Conc: string(c)})
	}
	return out
}

// Evidence is what the lab captured when a transfer stopped progressing.
type Evidence struct {
	RouterSS    string `json:"router_ss"`
	ConcSS      string `json:"conc_ss"`
	RouterNstat string `json:"router_nstat"`
	ConcNstat   string `json:"conc_nstat"`
	// RouterEndpoints is `ip mptcp endpoint show`; Subflows counts the
	// router's established TCP subflows of the upload.
	RouterEndpoints string `json:"router_endpoints"`
	Subflows        int    `json:"subflows"`
	Note            string `json:"note"`
}

// Result is one failover run, as `lifeline-lab failover --json` prints it.
type Result struct {
	Scenario           string  `json:"scenario"`
	Size               int64   `json:"size"`
	BytesSent          int64   `json:"bytes_sent"`
	BytesReceived      int64   `json:"bytes_received"`
	LostBytes          int64   `json:"lost_bytes"`
	UndeliveredBytes   int64   `json:"undelivered_bytes"`
	SHA256Match        bool    `json:"sha256_match"`
	SHA256             string  `json:"sha256"`
	ConnectionSurvived bool    `json:"connection_survived"`
	MPTCP              bool    `json:"mptcp"`
	MaxStallMs         float64 `json:"max_stall_ms"`
	FaultStallMs       float64 `json:"fault_stall_ms"`
	// FaultApplyMs: how long the call that applied the fault took (cut,
	// blackhole). The stall counts from the call's start; a call that
	// waited (e.g. for the RTNL lock) put the fault later than that.
	FaultApplyMs   float64 `json:"fault_apply_ms,omitempty"`
	RestoreStallMs float64 `json:"restore_stall_ms"`
	FiberMbps      float64 `json:"fiber_mbps"`
	LTEMbps        float64 `json:"lte_mbps"`
	// For the loss scenario: how often the policy moved the fiber in or
	// out of use during the loss (goal: at most one switch each way) and
	// the goodput kept during it relative to before.
	PathSwitches  int      `json:"path_switches"`
	FaultMbps     float64  `json:"fault_mbps"`
	KeptGoodput   float64  `json:"kept_goodput_ratio"`
	MovedToBackup bool     `json:"moved_to_backup"`
	RestoreMbps   float64  `json:"restore_mbps"`
	FailbackMs    *float64 `json:"failback_ms"`
	AvgMbps       float64  `json:"avg_mbps"`
	// Ceiling is the payload ceiling of each path in Mbit/s: shaper rate ×
	// PayloadShare.
	FiberCeilingMbps float64   `json:"fiber_ceiling_mbps"`
	LTECeilingMbps   float64   `json:"lte_ceiling_mbps"`
	Breakdown        Breakdown `json:"breakdown"`
	// DuplicateData is the receiver's MPTcpExtDuplicateData delta: segments
	// that arrived twice, mostly the re-injection after the fault.
	DuplicateData int64    `json:"duplicate_data"`
	LTESubflowMs  *float64 `json:"lte_subflow_ready_ms"`
	// TunnelRTTIdle is each tunnel's RTT before the upload (probes to the
	// concentrator's echo port through WireGuard); FiberRTTLoaded is the
	// fiber tunnel's RTT during the upload, before the fault: what a
	// probe timeout must tolerate.
	TunnelRTTIdle  map[string]RTTStats `json:"tunnel_rtt_idle"`
	FiberRTTLoaded *RTTStats           `json:"fiber_rtt_loaded,omitempty"`
	// LTEBytesBeforeFault is what the LTE tunnel sent in the 200 ms before
	// the fault; LTECarryingBeforeFault flags more than probes, i.e. the
	// breakdown's first_lte_byte_ms does not measure a failover.
	LTEBytesBeforeFault int64 `json:"lte_bytes_before_fault"`
	// FaultCounters are the non-zero MPTcpExt counter deltas of both ends
	// over the first 1.5 s of the fault ("conc.DuplicateData", ...).
	FaultCounters map[string]int64 `json:"fault_counters,omitempty"`
	// RestoreCounters are the same deltas over the first 1.5 s after the
	// restore.
	RestoreCounters        map[string]int64 `json:"restore_counters,omitempty"`
	LTECarryingBeforeFault bool             `json:"lte_carrying_before_fault"`
	// Relays are the ISP links' own counters (drops, lateness: the
	// emulator's timing error); Shaper is `tc -s qdisc` of each uplink.
	Relays map[string]linkem.Stats `json:"relays,omitempty"`
	Shaper map[string]string       `json:"shaper,omitempty"`
	// ISPLinks is `tc -s qdisc` of each path's two delay lines (Netem).
	ISPLinks map[string]string `json:"isp_links,omitempty"`
	// TunnelKinds is each router tunnel's link kind: "wireguard" (the
	// kernel's) or "tun" (wireguard-go).
	TunnelKinds map[string]string `json:"tunnel_kinds,omitempty"`
	Hung        bool              `json:"hung"`
	Evidence    *Evidence         `json:"evidence,omitempty"`
	// Times in ms after the upload's first byte, for plots.
	FaultAtMs   float64 `json:"fault_at_ms"`
	RestoreAtMs float64 `json:"restore_at_ms"`
	DurationMs  float64 `json:"duration_ms"`
	// Series is the receiver's goodput per 100 ms, Mbit/s.
	Series []float64 `json:"series_100ms_mbps"`
	// SubflowSeries is each path's tunnel transmit rate per 100 ms from
	// the router (one subflow each, wire bytes), Mbit/s, aligned with
	// Series.
	SubflowSeries map[string][]float64 `json:"subflow_tx_100ms_mbps,omitempty"`
	// AroundFault is the receiver's goodput per 10 ms from
	// AroundFaultFromMs before the fault to AroundFaultToMs after it.
	AroundFault []float64  `json:"around_fault_10ms_mbps,omitempty"`
	Events      []RelEvent `json:"events"`
	// FaultTrace is what TraceFault sampled (ms after the fault).
	FaultTrace []SSSample `json:"fault_trace,omitempty"`
	// RestoreTrace is what TraceRestore sampled (ms after the restore).
	RestoreTrace []SSSample `json:"restore_trace,omitempty"`
	// Cycles are the checks of FailoverOptions.Cycles, one after each
	// restore (none for a single cycle).
	Cycles   []CycleCheck      `json:"cycles,omitempty"`
	Settings map[string]string `json:"settings"`
	Error    string            `json:"error,omitempty"`

	recv *RecvSummary
	send *SendSummary
}

// RelEvent is a supervisor event relative to the fault.
type RelEvent struct {
	Ms     float64 `json:"ms"`
	Event  string  `json:"event"`
	Uplink string  `json:"uplink,omitempty"`
	Reason string  `json:"reason,omitempty"`
}

// PayloadShare is the share of a full WireGuard packet on the wire that is
// upload payload, at tunnel MTU 1420: inner IPv4 20 + TCP 20 + timestamps
// 12 + MPTCP DSS 28 (8-byte data ACK, 64-bit mapping) leave 1340 bytes of
// payload; the outer packet adds WireGuard 32 + UDP 8 + IPv4 20 and the
// shaper counts the 14-byte Ethernet header: 1340 / (1420+60+14) = 0.897.
const PayloadShare = 1340.0 / (1420 + 60 + 14)

// The window of Result.AroundFault, in ms relative to the fault.
const (
	AroundFaultFromMs = -200
	AroundFaultToMs   = 800
)

func (o *FailoverOptions) setDefaults() error {
	if err := o.World.setDefaults(); err != nil {
		return err
	}
	if o.Size <= 0 {
		o.Size = 200e6
	}
	if o.CutAt == 0 {
		o.CutAt = 3 * time.Second
	}
	if o.RestoreAfter == 0 {
		o.RestoreAfter = 5 * time.Second
	}
	if o.FlapPeriod == 0 {
		o.FlapPeriod = 200 * time.Millisecond
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 10 * time.Second
	}
	if o.Scenario == "" {
		o.Scenario = FaultCut
	}
	if o.Lifeline.RTOMin == 0 {
		o.Lifeline.RTOMin = 10 * time.Millisecond
	}
	if o.Scenario == FaultFlap && 2*o.FlapPeriod >= o.RestoreAfter {
		return fmt.Errorf("--restore-after %v must exceed two flap periods (%v)", o.RestoreAfter, 2*o.FlapPeriod)
	}
	if o.Cycles < 0 || (o.Cycles > 1 && o.Scenario == FaultNone) {
		return fmt.Errorf("Cycles %d: want 0 or more, and a fault to repeat (scenario %s)", o.Cycles, o.Scenario)
	}
	if o.Timeout == 0 {
		// Worst case: everything over LTE at half its rate, plus slack.
		o.Timeout = time.Duration(float64(o.Size)*8/float64(o.World.LTE.Rate)*2*float64(time.Second)) + o.CutAt + o.RestoreAfter + time.Minute
	}
	if o.Lifeline.Bin == "" {
		return errors.New("failover: the lifeline binary is not set")
	}
	return nil
}

// Failover builds a world, starts lifeline, uploads Size bytes over one
// MPTCP connection, injects the fault at CutAt, restores it RestoreAfter
// later, and tears everything down. The Result is filled as far as the run
// got even when an error is returned.
func Failover(ctx context.Context, o FailoverOptions) (*Result, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	w, err := Build(ctx, o.World)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := w.StartLifeline(ctx, o.Lifeline); err != nil {
		return nil, err
	}
	return w.RunFailover(ctx, o)
}

// RunFailover runs the upload and fault in a world whose lifeline runs.
func (w *World) RunFailover(ctx context.Context, o FailoverOptions) (*Result, error) {
	res := &Result{Scenario: string(o.Scenario), Size: o.Size, Settings: o.settings()}
	fiber, lte := w.Path("fiber"), w.Path("lte")
	res.FiberCeilingMbps = float64(w.ShaperRate(fiber)) * PayloadShare / 1e6
	res.LTECeilingMbps = float64(w.ShaperRate(lte)) * PayloadShare / 1e6
	err := w.runFailover(ctx, o, res)
	if err != nil {
		res.Error = err.Error()
	}
	return res, err
}

func (o *FailoverOptions) settings() map[string]string {
	return map[string]string{
		"fiber": FormatRateS(o.World.Fiber.Rate), "lte": FormatRateS(o.World.LTE.Rate),
		"fiber_rtt": o.World.Fiber.RTT.String(), "lte_rtt": o.World.LTE.RTT.String(),
		"cut_at": o.CutAt.String(), "restore_after": o.RestoreAfter.String(),
		"shaper_share": strconv.FormatFloat(o.World.ShaperShare, 'f', -1, 64),
		"shaper_queue": o.World.ShaperQueue.String(), "isp_buffer": o.World.ISPBuffer.String(),
		"shaper_queue_min": strconv.Itoa(o.World.ShaperQueueMin), "backup_queue_min": strconv.Itoa(o.World.BackupQueueMin),
		"shaper_burst":    strconv.Itoa(o.World.ShaperBurst),
		"size":            FormatSize(o.Size),
		"isp_link":        map[bool]string{false: "relay", true: "netem"}[o.World.Netem],
		"router_shaper":   map[bool]string{false: "htb+bfifo", true: "cake"}[o.World.CAKE],
		"router_unshaped": strconv.FormatBool(o.World.NoShaper),
		"sysctls":         strings.Join(o.World.Sysctls, " "),
		"sndbuf":          strconv.FormatInt(o.SendBuffer, 10),
		"cc":              map[bool]string{true: "bbr", false: o.CC}[o.CC == ""],
	}
}

func (w *World) runFailover(ctx context.Context, o FailoverOptions, res *Result) error {
	fiber, lte := w.Path("fiber"), w.Path("lte")
	recvOut := filepath.Join(w.Dir, "recv.json")
	sendOut := filepath.Join(w.Dir, "send.json")
	rp, err := w.start("recv", w.Conc, true, o.World.LabBin, "recv",
		"--listen", fmt.Sprintf("%s:%d", ServiceAddress, UploadPort), "--out", recvOut)
	if err != nil {
		return err
	}
	if err := rp.waitLine(ctx, "recv: listening", 10*time.Second); err != nil {
		return err
	}
	if err := w.waitEndpoints(ctx, []*Path{fiber, lte}, endpointWait); err != nil {
		return err
	}
	res.TunnelRTTIdle = map[string]RTTStats{}
	for _, p := range w.Paths {
		st, err := w.TunnelRTT(ctx, p, 20, 10*time.Millisecond)
		if err != nil {
			return err
		}
		res.TunnelRTTIdle[p.Name] = st
	}
	before, err := readNetstat(w.Conc)
	if err != nil {
		return err
	}
	seed := o.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	sendArgs := []string{"send", "--to", fmt.Sprintf("%s:%d", ServiceAddress, UploadPort), "--size", strconv.FormatInt(o.Size, 10),
		"--seed", strconv.FormatUint(seed, 10), "--out", sendOut}
	if o.SendBuffer > 0 {
		sendArgs = append(sendArgs, "--sndbuf", strconv.FormatInt(o.SendBuffer, 10))
	}
	if o.CC != "" {
		sendArgs = append(sendArgs, "--cc", o.CC)
	}
	sp, err := w.start("send", w.Router, false, o.World.LabBin, sendArgs...)
	if err != nil {
		return err
	}
	start := time.Now()
	// The loaded fiber RTT, every 10 ms until just before the fault.
	loaded, err := w.startPinger(fiber, 10*time.Millisecond)
	if err != nil {
		return err
	}
	loadedDone := make(chan RTTStats, 1)
	loadedUntil := time.Until(start.Add(o.CutAt - 50*time.Millisecond))
	if o.Scenario == FaultNone {
		loadedUntil = o.Timeout // until the upload ends
	}
	go func() {
		select {
		case <-time.After(loadedUntil):
		case <-sp.done:
		case <-ctx.Done():
		}
		loadedDone <- loaded.stop(100 * time.Millisecond)
	}()

	// Progress from the receiver's stdout: the watchdog and the progress line.
	var recvBytes atomic.Int64
	var lastNew atomic.Int64
	lastNew.Store(start.UnixNano())
	var phase atomic.Value
	phase.Store("fiber")
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for line := range rp.lines {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "P" {
				n, _ := strconv.ParseInt(f[2], 10, 64)
				if n > recvBytes.Load() {
					recvBytes.Store(n)
					lastNew.Store(time.Now().UnixNano())
				}
				if o.Progress != nil {
					o.Progress(n, phase.Load().(string))
				}
			}
		}
	}()

	// Record when the kernel opened the LTE subflow (lte_subflow_ready_ms):
	// a fault before that tests the MP_JOIN, not the failover.
	subflow := make(chan float64, 1)
	go func() {
		if d, ok := w.waitSubflow(ctx, lte, o.CutAt); ok {
			subflow <- ms(d)
		}
		close(subflow)
	}()

	type outcome struct {
		hung bool
		err  error
	}
	watch := make(chan outcome, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		deadline := start.Add(o.Timeout)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-sp.done:
				watch <- outcome{}
				return
			case now := <-t.C:
				if now.Sub(time.Unix(0, lastNew.Load())) > o.StallTimeout {
					watch <- outcome{hung: true, err: fmt.Errorf("transfer hung: no new byte for %v at %d bytes", o.StallTimeout, recvBytes.Load())}
					return
				}
				if now.After(deadline) {
					watch <- outcome{hung: true, err: fmt.Errorf("transfer did not finish within %v", o.Timeout)}
					return
				}
			}
		}
	}()

	// The schedule: fault at CutAt, restore RestoreAfter later. The
	// watchdog's verdict can come at any point; once it has (done), the
	// schedule is skipped.
	var t0, t1 time.Time
	var sampler *txSampler
	// Each tunnel carries one subflow of the upload (plus sparse probes):
	// its tx counter every 100 ms gives the per-subflow plot.
	tunnels := map[string]*txSampler{}
	for _, p := range w.Paths {
		tunnels[p.Name] = w.startTxSamplerEvery(p.WG, o.Timeout, 100*time.Millisecond)
	}
	var out outcome
	done := false
	wait := func(until time.Time) error {
		if done {
			return nil
		}
		select {
		case out = <-watch:
			done = true
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(until)):
		}
		return nil
	}
	if err := wait(start.Add(o.CutAt - lteLead)); err != nil {
		return err
	}
	// The LTE counter is sampled from shortly before the fault, to tell
	// whether LTE was already carrying data when the fiber died.
	if !done && o.Scenario != FaultNone {
		sampler = w.startTxSampler(lte.WG, lteLead+3*time.Second)
	}
	if err := wait(start.Add(o.CutAt)); err != nil {
		return err
	}
	finishedEarly := done && !out.hung
	if !done {
		select {
		case <-sp.done:
			finishedEarly = true
		default:
		}
	}
	if o.Scenario != FaultNone && !done && !finishedEarly {
		phase.Store("fault")
		cBefore, _ := readNetstat(w.Conc)
		rBefore, _ := readNetstat(w.Router)
		w.LossRate = o.Loss
		if w.LossRate == 0 {
			w.LossRate = 0.05
		}
		var traced chan []SSSample
		traceStart := time.Now()
		if o.TraceFault > 0 {
			traced = make(chan []SSSample, 1)
			go func() { traced <- w.traceSS(ctx, traceStart, o.TraceFault) }()
		}
		if t0, err = w.Inject(ctx, o.Scenario, fiber, o.FlapPeriod); err != nil {
			return err
		}
		if o.Scenario == FaultCut || o.Scenario == FaultBlackhole {
			res.FaultApplyMs = float64(time.Since(t0).Microseconds()) / 1000
		}
		if traced != nil {
			shift := float64(t0.Sub(traceStart).Microseconds()) / 1000
			defer func() {
				res.FaultTrace = <-traced
				for i := range res.FaultTrace {
					res.FaultTrace[i].Ms -= shift
				}
			}()
		}
		// The MPTCP counters of the failover alone (not the whole run):
		// duplicates at the receiver, MP_PRIO and re-injections.
		if err := wait(t0.Add(min(o.RestoreAfter, 1500*time.Millisecond))); err != nil {
			return err
		}
		res.FaultCounters = w.counterDeltas(cBefore, rBefore)
		if err := wait(t0.Add(o.RestoreAfter)); err != nil {
			return err
		}
		// Read before the trace starts: its times count from just before
		// the restore.
		cBeforeR, _ := readNetstat(w.Conc)
		rBeforeR, _ := readNetstat(w.Router)
		var rtraced chan []SSSample
		if o.TraceRestore > 0 {
			rtraced = make(chan []SSSample, 1)
			go func() { rtraced <- w.traceSS(ctx, time.Now(), o.TraceRestore) }()
		}
		if t1, err = w.Restore(o.Scenario, fiber); err != nil {
			return err
		}
		// The same counters over the fail-back: a stall there with every
		// subflow's data acknowledged points at the receiver's MPTCP
		// level (RcvPruned: data dropped for want of memory after its
		// subflow acknowledged it, which only the MPTCP-level
		// retransmission timer repairs).
		rcounters := make(chan map[string]int64, 1)
		go func() {
			select {
			case <-time.After(1500 * time.Millisecond):
			case <-ctx.Done():
			}
			rcounters <- w.counterDeltas(cBeforeR, rBeforeR)
		}()
		defer func() { res.RestoreCounters = <-rcounters }()
		if rtraced != nil {
			defer func() { res.RestoreTrace = <-rtraced }()
		}
		phase.Store("restored")
		// With Cycles: a check RestoreAfter after each restore, and the
		// fault again until it has come Cycles times.
		for c, last := 1, t1; o.Cycles > 1; c++ {
			if err := wait(last.Add(o.RestoreAfter)); err != nil {
				return err
			}
			if done {
				break
			}
			res.Cycles = append(res.Cycles, w.cycleCheck(c, last))
			if c == o.Cycles {
				break
			}
			tf, err := w.Inject(ctx, o.Scenario, fiber, o.FlapPeriod)
			if err != nil {
				return err
			}
			if err := wait(tf.Add(o.RestoreAfter)); err != nil {
				return err
			}
			if last, err = w.Restore(o.Scenario, fiber); err != nil {
				return err
			}
		}
	}
	if !done {
		select {
		case out = <-watch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if o.Scenario == FaultNone {
		finishedEarly = false
	}
	wcancel()
	if out.hung {
		res.Hung = true
		res.Evidence = w.captureEvidence(out.err.Error())
		sp.stop(2 * time.Second)
		rp.stop(2 * time.Second)
	}
	// The receiver writes its summary after answering the sender.
	select {
	case <-rp.done:
	case <-time.After(10 * time.Second):
		rp.stop(2 * time.Second)
	}
	<-sp.done
	<-recvDone
	if st := <-loadedDone; st.Sent > 20 {
		res.FiberRTTLoaded = &st
	}
	if v, ok := <-subflow; ok {
		res.LTESubflowMs = &v
	}
	res.Relays, res.Shaper = map[string]linkem.Stats{}, map[string]string{}
	for _, p := range w.Paths {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if !w.opt.Netem {
			if st, err := w.Relay(p).Stats(sctx); err == nil {
				res.Relays[p.Name] = st
			}
		}
		if out, err := run(sctx, "tc", "-n", w.Router, "-s", "qdisc", "show", "dev", p.Dev); err == nil {
			res.Shaper[p.Name] = out
		}
		cancel()
	}
	if w.opt.Netem {
		res.ISPLinks = w.ispLinkStats(ctx)
	}
	res.TunnelKinds = w.tunnelKinds()
	after, _ := readNetstat(w.Conc)
	res.DuplicateData = after["MPTcpExt.DuplicateData"] - before["MPTcpExt.DuplicateData"]

	var rs RecvSummary
	var ss SendSummary
	rerr := readJSONFile(recvOut, &rs)
	serr := readJSONFile(sendOut, &ss)
	res.recv, res.send = &rs, &ss
	evs, _ := w.ReadEvents()
	var lteTx []txSample
	if sampler != nil {
		lteTx = sampler.stop()
	}
	analyze(res, &rs, &ss, evs, t0, t1, lteTx, start)
	res.SubflowSeries = map[string][]float64{}
	for name, ts := range tunnels {
		res.SubflowSeries[name] = seriesFrom(ts.stop(), rs.FirstNS, int64(100*time.Millisecond))
	}
	switch {
	case out.err != nil:
		return out.err
	case rerr != nil:
		return fmt.Errorf("receiver summary: %w", rerr)
	case serr != nil:
		return fmt.Errorf("sender summary: %w", serr)
	case ss.Error != "":
		return fmt.Errorf("sender: %s", ss.Error)
	case rs.Error != "":
		return fmt.Errorf("receiver: %s", rs.Error)
	case finishedEarly:
		return fmt.Errorf("the upload finished before the fault at %v: raise --size or lower --cut-at", o.CutAt)
	case !res.SHA256Match:
		return fmt.Errorf("sha256 mismatch: sent %s (%d bytes), received %s (%d bytes)", ss.SHA256, ss.BytesSent, rs.SHA256, rs.Bytes)
	}
	return nil
}

// waitSubflow polls (with ss, before the fault only) until an established
// subflow leaves p's tunnel address; it reports how long that took.
func (w *World) waitSubflow(ctx context.Context, p *Path, within time.Duration) (time.Duration, bool) {
	start := time.Now()
	src := strings.Split(p.TunnelAddr(), "/")[0]
	for time.Since(start) < within-200*time.Millisecond {
		out, err := run(ctx, "ip", "netns", "exec", w.Router, "ss", "-tnH", "state", "established", "src", src)
		if err == nil && strings.Contains(out, fmt.Sprintf(":%d", UploadPort)) {
			return time.Since(start), true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return 0, false
}

func (w *World) captureEvidence(note string) *Evidence {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	get := func(ns string, args ...string) string {
		out, err := run(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
		if err != nil {
			return out + "\n" + err.Error()
		}
		return out
	}
	ev := &Evidence{
		RouterSS:        get(w.Router, "ss", "-tiMn") + get(w.Router, "ss", "-tin"),
		ConcSS:          get(w.Conc, "ss", "-tiMn") + get(w.Conc, "ss", "-tin"),
		RouterNstat:     get(w.Router, "nstat", "-asz"),
		ConcNstat:       get(w.Conc, "nstat", "-asz"),
		RouterEndpoints: get(w.Router, "ip", "mptcp", "endpoint", "show"),
		Note:            note,
	}
	// Tell the two kinds of hang apart: no subflow left at all (every
	// endpoint was removed: a supervisor problem) or subflows that exist
	// but do not move data (the kernel hang seen on 6.18).
	sub, _ := run(ctx, "ip", "netns", "exec", w.Router, "ss", "-tnH", "state", "established", "dport", "= :"+strconv.Itoa(UploadPort))
	ev.Subflows = len(strings.Split(strings.TrimSpace(sub), "\n"))
	if strings.TrimSpace(sub) == "" {
		ev.Subflows = 0
		ev.Note += "; no TCP subflow left on the router (endpoints: " + strings.TrimSpace(strings.ReplaceAll(ev.RouterEndpoints, "\n", "; ")) + ")"
	} else {
		ev.Note += fmt.Sprintf("; %d subflow(s) established but no progress", ev.Subflows)
	}
	return ev
}

// txSampler reads an interface's tx_bytes about every millisecond.
type txSampler struct {
	mu      sync.Mutex
	samples []txSample
	quit    chan struct{}
	done    chan struct{}
}

type txSample struct {
	t     time.Time
	bytes uint64
}

func (w *World) startTxSampler(ifname string, dur time.Duration) *txSampler {
	return w.startTxSamplerEvery(ifname, dur, 500*time.Microsecond)
}

// seriesFrom turns counter samples into Mbit/s per bin of binNS from
// baseNS (the upload's first byte at the receiver).
func seriesFrom(ss []txSample, baseNS, binNS int64) []float64 {
	// No base (the receiver never accepted: a sender that failed at once)
	// would put the samples ~1.7e10 bins from it: a run that died of that
	// allocation in the VM lab.
	if baseNS <= 0 || binNS <= 0 || len(ss) == 0 {
		return nil
	}
	var out []float64
	for i := 1; i < len(ss); i++ {
		a, b := ss[i-1], ss[i]
		if b.t.UnixNano() < baseNS || b.bytes < a.bytes {
			continue
		}
		bin := int((b.t.UnixNano() - baseNS) / binNS)
		for len(out) <= bin {
			out = append(out, 0)
		}
		out[bin] += float64(b.bytes-a.bytes) * 8 / (float64(binNS) / 1e9) / 1e6
	}
	return out
}

func (w *World) startTxSamplerEvery(ifname string, dur, every time.Duration) *txSampler {
	s := &txSampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		end := time.Now().Add(dur)
		for time.Now().Before(end) {
			b, err := w.TxBytes(ifname)
			if err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, txSample{time.Now(), b})
				s.mu.Unlock()
			}
			select {
			case <-s.quit:
				return
			case <-time.After(every):
			}
		}
	}()
	return s
}

func (s *txSampler) stop() []txSample {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// lteLead is how long before the fault the LTE counter is watched.
const lteLead = 200 * time.Millisecond

// faultWindow bounds when the fault's stall may begin after the fault.
const faultWindow = 500 * time.Millisecond

// probeAllowance is how much the LTE tunnel may send after the fault
// before it counts as carrying data: keepalives and sparse probes are a
// few hundred bytes; a data segment is more than a kilobyte.
const probeAllowance = 1000

// analyze derives the result's figures from the two summaries, the events
// and the LTE counter samples.
func analyze(res *Result, rs *RecvSummary, ss *SendSummary, evs []Event, t0, t1 time.Time, lteTx []txSample, start time.Time) {
	res.BytesSent = ss.BytesSent
	res.BytesReceived = rs.Bytes
	res.MPTCP = ss.MPTCP && rs.MPTCP
	res.SHA256 = rs.SHA256
	res.SHA256Match = rs.SHA256 != "" && rs.SHA256 == ss.SHA256 && rs.Bytes == res.Size && ss.BytesSent == res.Size
	res.ConnectionSurvived = ss.Error == "" && rs.Error == "" && rs.EOF && ss.PeerBytes == ss.BytesSent && ss.PeerSHA256 == ss.SHA256
	res.UndeliveredBytes = max(res.Size-rs.Bytes, 0)
	// Lost: handed to the socket, never delivered, in a run the watchdog
	// did not abort (an aborted run's tail was merely still in flight).
	if !res.Hung {
		res.LostBytes = max(ss.BytesSent-rs.Bytes, 0)
	}
	base := rs.FirstNS
	if base == 0 {
		base = start.UnixNano()
	}
	rel := func(ns int64) float64 { return float64(ns-base) / 1e6 }
	if rs.LastNS > rs.FirstNS {
		res.DurationMs = rel(rs.LastNS)
		res.AvgMbps = float64(rs.Bytes) * 8 / (float64(rs.LastNS-rs.FirstNS) / 1e9) / 1e6
	}
	for _, g := range rs.Gaps {
		res.MaxStallMs = math.Max(res.MaxStallMs, g.Ms())
	}
	// 100 ms series from the 10 ms bins.
	if rs.BinNS > 0 {
		per := int(int64(100*time.Millisecond) / rs.BinNS)
		firstBin := int((base - rs.AcceptNS) / rs.BinNS)
		for i := max(firstBin, 0); i < len(rs.Bins); i += per {
			var sum int64
			for j := i; j < min(i+per, len(rs.Bins)); j++ {
				sum += rs.Bins[j]
			}
			res.Series = append(res.Series, float64(sum)*8/0.1/1e6)
		}
	}
	rate := func(fromNS, toNS int64) float64 { return rs.mbps(fromNS, toNS) }
	if t0.IsZero() {
		// No fault: events are relative to the first byte.
		for _, e := range evs {
			res.Events = append(res.Events, RelEvent{Ms: rel(e.Time.UnixNano()), Event: e.Event, Uplink: e.Uplink, Reason: e.Reason})
		}
		res.FiberMbps = rate(base+int64(time.Second), rs.LastNS)
		return
	}
	T0, T1 := t0.UnixNano(), t1.UnixNano()
	res.FaultAtMs, res.RestoreAtMs = rel(T0), rel(T1)
	if rs.BinNS > 0 {
		first := int((T0 + AroundFaultFromMs*int64(time.Millisecond) - rs.AcceptNS) / rs.BinNS)
		n := int((AroundFaultToMs - AroundFaultFromMs) * int64(time.Millisecond) / rs.BinNS)
		for i := first; i < first+n; i++ {
			v := 0.0
			if i >= 0 && i < len(rs.Bins) {
				v = float64(rs.Bins[i]) * 8 / (float64(rs.BinNS) / 1e9) / 1e6
			}
			res.AroundFault = append(res.AroundFault, v)
		}
	}
	// Skip the first second (slow start, subflow set-up).
	res.FiberMbps = rate(min(base+int64(time.Second), T0-int64(500*time.Millisecond)), T0)
	// The fault's stall: the longest gap that starts between just before
	// the fault (a gap may begin before the netlink call returns) and the
	// end of what was still draining from the dead path (its ISP buffer
	// and flight, well under faultWindow). Later gaps belong to the LTE
	// phase, not to the failover.
	var fg *Gap
	for i := range rs.Gaps {
		g := &rs.Gaps[i]
		if g.EndNS > T0 && g.StartNS >= T0-int64(20*time.Millisecond) && g.StartNS < min(T1, T0+int64(faultWindow)) {
			if fg == nil || g.EndNS-g.StartNS > fg.EndNS-fg.StartNS {
				fg = g
			}
		}
	}
	ptr := func(v float64) *float64 { return &v }
	if fg != nil {
		res.FaultStallMs = fg.Ms()
		res.Breakdown.FirstNewByteMs = ptr(float64(fg.EndNS-T0) / 1e6)
		res.LTEMbps = rate(fg.EndNS+int64(500*time.Millisecond), T1)
	} else {
		res.LTEMbps = rate(T0+int64(500*time.Millisecond), T1)
	}
	for _, g := range rs.Gaps {
		if g.EndNS > T1 {
			res.RestoreStallMs = math.Max(res.RestoreStallMs, g.Ms())
		}
	}
	res.FaultMbps = rate(T0+int64(500*time.Millisecond), T1)
	if res.FiberMbps > 0 {
		res.KeptGoodput = res.FaultMbps / res.FiberMbps
	}
	for _, e := range evs {
		if e.Uplink == "fiber" && e.Time.UnixNano() >= T0 && e.Time.UnixNano() <= T1 &&
			(e.Event == "uplink_down" || e.Event == "uplink_up") {
			res.PathSwitches++
			if e.Event == "uplink_down" {
				res.MovedToBackup = true
			}
		}
	}
	for _, e := range evs {
		d := float64(e.Time.UnixNano()-T0) / 1e6
		res.Events = append(res.Events, RelEvent{Ms: d, Event: e.Event, Uplink: e.Uplink, Reason: e.Reason})
		if d < -1 || e.Uplink != "fiber" || e.Time.UnixNano() > T1 {
			continue
		}
		switch e.Event {
		case "uplink_down":
			if res.Breakdown.DetectedMs == nil {
				res.Breakdown.DetectedMs = ptr(d)
			}
		case "endpoint_removed":
			if res.Breakdown.EndpointRemovedMs == nil {
				res.Breakdown.EndpointRemovedMs = ptr(d)
			}
		}
	}
	if len(lteTx) > 0 {
		// baseTx: the counter at the fault; preTx: what LTE sent in the
		// lteLead before it (probes only, unless LTE already carried data,
		// e.g. after a false "down" of the fiber).
		first, baseTx := lteTx[0].bytes, lteTx[0].bytes
		for _, s := range lteTx {
			if !s.t.After(t0) {
				baseTx = s.bytes
				continue
			}
			if s.bytes > baseTx+probeAllowance {
				res.Breakdown.FirstLTEByteMs = ptr(float64(s.t.UnixNano()-T0) / 1e6)
				break
			}
		}
		res.LTEBytesBeforeFault = int64(baseTx - first)
		res.LTECarryingBeforeFault = baseTx-first > 2*probeAllowance
	}
	// Fail-back: the end of the first 100 ms window after the restore that
	// carries at least 90 % of the fiber rate.
	if res.FiberMbps > 0 && rs.BinNS > 0 {
		per := int(int64(100*time.Millisecond) / rs.BinNS)
		first := int((T1 - rs.AcceptNS) / rs.BinNS)
		for i := max(first, 0); i+per <= len(rs.Bins); i++ {
			var sum int64
			for j := i; j < i+per; j++ {
				sum += rs.Bins[j]
			}
			if float64(sum)*8/0.1/1e6 >= 0.9*res.FiberMbps {
				endNS := rs.AcceptNS + int64(i+per)*rs.BinNS
				res.FailbackMs = ptr(float64(endNS-T1) / 1e6)
				res.RestoreMbps = rate(endNS, rs.LastNS)
				break
			}
		}
		if res.FailbackMs == nil {
			res.RestoreMbps = rate(T1+int64(time.Second), rs.LastNS)
		}
	}
}

// mbps is the goodput between two instants from the 10 ms bins.
func (rs *RecvSummary) mbps(fromNS, toNS int64) float64 {
	if rs.BinNS == 0 || toNS-fromNS < rs.BinNS {
		return 0
	}
	a := int((fromNS - rs.AcceptNS) / rs.BinNS)
	b := int((toNS - rs.AcceptNS) / rs.BinNS)
	a, b = max(a, 0), min(b, len(rs.Bins))
	if b <= a {
		return 0
	}
	var sum int64
	for _, v := range rs.Bins[a:b] {
		sum += v
	}
	return float64(sum) * 8 / (float64(int64(b-a)*rs.BinNS) / 1e9) / 1e6
}

// FormatRateS formats bit/s like tc.
func FormatRateS(r uint64) string {
	switch {
	case r%1e6 == 0:
		return fmt.Sprintf("%dmbit", r/1e6)
	case r%1e3 == 0:
		return fmt.Sprintf("%dkbit", r/1e3)
	}
	return fmt.Sprintf("%dbit", r)
}

// Tweak for the config: exported so the CLI and tests share it.
func holdDown(d time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		if d > 0 {
			c.Failover.HoldDown = config.Duration(d)
		}
	}
}

// counterDeltas is counterDelta of both ends, keyed "conc.X" and
// "router.X".
func (w *World) counterDeltas(concBefore, routerBefore map[string]int64) map[string]int64 {
	m := map[string]int64{}
	for k, v := range counterDelta(concBefore, w.Conc) {
		m["conc."+k] = v
	}
	for k, v := range counterDelta(routerBefore, w.Router) {
		m["router."+k] = v
	}
	return m
}

// counterDelta returns the non-zero MPTcpExt deltas since before.
func counterDelta(before map[string]int64, ns string) map[string]int64 {
	after, err := readNetstat(ns)
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for k, v := range after {
		if strings.HasPrefix(k, "MPTcpExt.") && v != before[k] {
			out[strings.TrimPrefix(k, "MPTcpExt.")] = v - before[k]
		}
	}
	return out
}

// routerPM dials the MPTCP path manager in the router's namespace.
func (w *World) routerPM() (*mptcp.Client, error) {
	fd, err := unix.Open("/run/netns/"+w.Router, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", w.Router, err)
	}
	// The client's socket stays in the namespace after the fd is closed.
	defer unix.Close(fd)
	return mptcp.DialNetNS(fd)
}

// endpointWait bounds the wait for the supervisor's MPTCP endpoints before
// a transfer. A WireGuard handshake whose first initiation is lost is
// retried after 5 s (REKEY_TIMEOUT), so a path can come up that late.
const endpointWait = 15 * time.Second

// waitEndpoints waits until the router has an MPTCP endpoint on every
// path's tunnel address, i.e. the supervisor saw each path healthy. A
// fault injected before that tests a world still starting (once in the VM
// lab the LTE tunnel answered none of 21 pings and the "failover" stalled
// 2.5 s until its handshake retry), not the failover.
func (w *World) waitEndpoints(ctx context.Context, paths []*Path, timeout time.Duration) error {
	pm, err := w.routerPM()
	if err != nil {
		return err
	}
	defer pm.Close()
	deadline := time.Now().Add(timeout)
	for {
		eps, err := pm.Endpoints()
		if err != nil {
			return err
		}
		missing := missingEndpoints(eps, paths)
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("world not ready: no MPTCP endpoint on the router for %s after %v (endpoints: %v)",
				strings.Join(missing, ", "), timeout, eps)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// missingEndpoints names the paths whose tunnel address has no endpoint.
func missingEndpoints(eps []mptcp.Endpoint, paths []*Path) []string {
	var missing []string
	for _, p := range paths {
		addr := netip.MustParsePrefix(p.TunnelAddr()).Addr()
		if !slices.ContainsFunc(eps, func(e mptcp.Endpoint) bool { return e.Addr == addr }) {
			missing = append(missing, p.Name+" ("+addr.String()+")")
		}
	}
	return missing
}
