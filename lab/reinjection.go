package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lifeline-router/lifeline/appliance/config"
)

// The stock-versus-patched comparison of issue 7. Our board kernel carries
// a patch that re-injects at the surviving subflow's pace after a subflow
// close (board/amd64/patches); the per-netns sysctl
// net.mptcp.reinject_limit switches it off (0, the stock behaviour) or
// selects a mode (1 pacing, 2 to 4 the probe, 4 with a first flight from
// the likely hole; 4 is the default). The arms
// run in the same VM, in one run, trial by trial in alternating
// order so that drift of the host's load does not favour either.

const reinjectSysctl = "net.mptcp.reinject_limit"

// limitNames names the arms by the sysctl's value: 0 is the stock
// behaviour, 1 re-injects at the surviving subflow's pace (0001), 2 also
// asks the peer where its hole starts before re-injecting after a cut
// (0002); 3 asks after a blackhole too; 4 also sends, right behind the
// probe, a first flight from where the peer's hole likely starts (0003).
var limitNames = map[int]string{0: "stock", 1: "patched", 2: "probe", 3: "probe-all", 4: "lead"}

// ratesWhy goes into the report: the lab's defaults are the seed's rates,
// the VM's are lower.
const ratesWhy = "Under TCG (no usable KVM here) the guest runs on a virtual clock (qemu -icount shift 0: " +
	"one instruction per ns), so what bounds the lab is the guest's instruction count: one kernel WireGuard " +
	"tunnel carries 261 Mbit/s of guest time with the AVX2 of -cpu max, but the whole world (both tunnel ends, " +
	"CAKE, netem, the MPTCP sender and receiver hashing every byte, supervisor, concentrator) shares that one " +
	"instruction stream and saturates at about 50 Mbit/s of goodput. The fiber runs at 40 Mbit/s so that CPU " +
	"starvation does not read as path failure; LTE runs at the seed's 20 Mbit/s and both RTTs are the seed's: " +
	"the stall goals depend on the LTE RTT, not on the fiber rate."

// ReinjectionVariant is one arm of the comparison.
type ReinjectionVariant struct {
	Name    string // stock, patched, probe: limitNames
	Limit   int    // the sysctl's value
	NoNudge bool   // the supervisor's DATA_ACK nudge off
	Nudge   string // nudge, no-nudge
	Scen    Fault
	Key     string // name/scenario/nudge, the Stats key
}

// ReinjectionReport is build/bench/reinjection.json.
type ReinjectionReport struct {
	Started  time.Time         `json:"started"`
	Kernel   string            `json:"kernel"`
	Accel    string            `json:"accel,omitempty"`
	Settings map[string]string `json:"settings"`
	Why      string            `json:"rates_why"`
	Goals    map[string]string `json:"goals"`
	// Stats is keyed "stock/cut/nudge", "patched/blackhole/no-nudge", ...
	Stats map[string]*ScenarioStats `json:"stats"`
	// DuplicatesTotal sums the receiver's MPTcpExtDuplicateData over each
	// key's trials (whole runs, the restore included); DuplicatesFault
	// sums it over the first 1.5 s of each fault only: the re-injection
	// the patch is about, and what the verdict compares.
	DuplicatesTotal map[string]int64 `json:"duplicates_total"`
	DuplicatesFault map[string]int64 `json:"duplicates_fault"`
	// Verdict compares the arms against the goals.
	Verdict map[string]string   `json:"verdict"`
	Trials  []*ReinjectionTrial `json:"trials"`
}

// ReinjectionTrial is one run of one arm.
type ReinjectionTrial struct {
	Key    string  `json:"key"`
	Trial  int     `json:"trial"`
	Result *Result `json:"result"`
}

func cmdReinjection(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reinjection", stderr)
	wf := addWorldFlags(fs)
	fo := addFailoverFlags(fs)
	fo.size = sizeFlag(12e6)
	fo.cutAt = durFlag(2 * time.Second)
	fo.restoreAfter = durFlag(2 * time.Second)
	trials := fs.Int("trials", 20, "trials per arm (kernel × scenario × nudge)")
	scen := fs.String("scenarios", "cut,blackhole", "comma-separated scenarios")
	nudge := fs.String("nudge", "on", "the supervisor's DATA_ACK nudge: on, off or both")
	limitsFlag := fs.String("limits", "0,4", "the arms: comma-separated values of "+reinjectSysctl+" (0 stock, 1 patched: 0001 only, 2 probe after a cut, 3 probe-all, 4 lead: probe-all with a first flight from the likely hole, the board kernel's default); 0 is the reference")
	out := fs.String("out", "build/bench/reinjection.json", "report file")
	plot := fs.String("plot", "build/bench/reinjection.svg", "receive rate around the fault, stock vs patched")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *trials < 1 {
		return fmt.Errorf("--trials %d: want at least 1", *trials)
	}
	var nudges []bool // NoNudge values
	switch *nudge {
	case "on":
		nudges = []bool{false}
	case "off":
		nudges = []bool{true}
	case "both":
		nudges = []bool{false, true}
	default:
		return fmt.Errorf("--nudge %q: want on, off or both", *nudge)
	}
	limits, err := parseLimits(*limitsFlag)
	if err != nil {
		return err
	}
	scenarios, err := parseScenarios(*scen)
	if err != nil {
		return err
	}
	for _, f := range scenarios {
		if f != FaultCut && f != FaultBlackhole && f != FaultFlap {
			return fmt.Errorf("--scenarios: %s: want cut, blackhole or flap", f)
		}
	}
	if slices.ContainsFunc(wf.sysctls, func(s string) bool { return strings.HasPrefix(s, reinjectSysctl+"=") }) {
		return fmt.Errorf("--sysctl %s: the comparison sets it itself", reinjectSysctl)
	}
	// The sysctl is per network namespace and new namespaces start from
	// the kernel's default; its presence in ours says the kernel has the
	// patch at all.
	if _, err := os.Stat("/proc/sys/" + strings.ReplaceAll(reinjectSysctl, ".", "/")); err != nil {
		return fmt.Errorf("this kernel has no %s (%v): run on the board kernel, e.g. `lifeline-lab vm -- reinjection`", reinjectSysctl, err)
	}
	base, err := fo.options(wf, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	uname, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	lteRTT := float64(base.World.LTE.RTT) / float64(time.Millisecond)
	if base.World.LTE.RTT == 0 {
		lteRTT = 40
	}
	rep := &ReinjectionReport{
		Started: time.Now(), Kernel: strings.TrimSpace(string(uname)), Accel: os.Getenv("LIFELINE_VM_ACCEL"),
		Stats: map[string]*ScenarioStats{}, DuplicatesTotal: map[string]int64{}, DuplicatesFault: map[string]int64{}, Verdict: map[string]string{},
		Goals: map[string]string{
			"cut":        fmt.Sprintf("patched fault stall p100 ≤ 1.5 × LTE RTT + 10 ms = %.0f ms", 1.5*lteRTT+10),
			"blackhole":  fmt.Sprintf("patched fault stall p100 ≤ 1.5 × LTE RTT + 60 ms = %.0f ms", 1.5*lteRTT+60),
			"lost":       "0 bytes lost, 0 hung, in every arm",
			"duplicates": "patched: at least 10× fewer duplicate segments at the receiver than stock (MPTcpExtDuplicateData in the first 1.5 s of the fault, summed over the trials)",
		},
		Why: ratesWhy,
	}
	arms := func(i int) []ReinjectionVariant {
		var vs []ReinjectionVariant
		for _, sc := range scenarios {
			for _, nn := range nudges {
				ks := slices.Clone(limits)
				if i%2 == 1 {
					slices.Reverse(ks) // alternate which arm goes first
				}
				for _, k := range ks {
					v := ReinjectionVariant{Name: limitNames[k], Limit: k, NoNudge: nn, Scen: sc,
						Nudge: map[bool]string{false: "nudge", true: "no-nudge"}[nn]}
					v.Key = v.Name + "/" + string(sc) + "/" + v.Nudge
					vs = append(vs, v)
				}
			}
		}
		return vs
	}
	byKey := map[string][]*Result{}
	var keys []string
	for i := 0; i < *trials && ctx.Err() == nil; i++ {
		for _, v := range arms(i) {
			if ctx.Err() != nil {
				break
			}
			o := base
			o.Scenario = v.Scen
			o.Seed = uint64(i + 1)
			o.World.Seed = uint64(i + 1)
			o.World.Sysctls = append(slices.Clone(base.World.Sysctls), fmt.Sprintf("%s=%d", reinjectSysctl, v.Limit))
			tweak := base.Lifeline.Tweak
			noNudge := v.NoNudge
			o.Lifeline.Tweak = func(c *config.Config) {
				if tweak != nil {
					tweak(c)
				}
				// Each arm says what it wants: "auto" would skip the
				// nudge on the patched arm only.
				c.Failover.Nudge = config.NudgeOn
				if noNudge {
					c.Failover.Nudge = config.NudgeOff
				}
			}
			res, err := Failover(ctx, o)
			if ctx.Err() != nil {
				break
			}
			if res == nil {
				res = &Result{Scenario: string(v.Scen), Error: fmt.Sprint(err)}
			}
			if rep.Settings == nil {
				rep.Settings = maps.Clone(res.Settings)
				delete(rep.Settings, "sysctls")
				rep.Settings["scenarios"] = *scen
				rep.Settings["nudge"] = *nudge
				rep.Settings["limits"] = *limitsFlag
				rep.Settings["args"] = strings.Join(args, " ")
			}
			res.Series, res.SubflowSeries = nil, nil
			res.Evidence = trimEvidence(res.Evidence)
			if _, ok := byKey[v.Key]; !ok {
				keys = append(keys, v.Key)
			}
			byKey[v.Key] = append(byKey[v.Key], res)
			rep.Trials = append(rep.Trials, &ReinjectionTrial{Key: v.Key, Trial: i + 1, Result: res})
			fmt.Fprintf(stderr, "%-28s %2d/%d: stall %6.1f ms (apply %.1f det %s rm %s lte %s new %s) dup %4d/%4d lost %d hung %v lte-before %v %s\n",
				v.Key, i+1, *trials, res.FaultStallMs, res.FaultApplyMs, fmtMs(res.Breakdown.DetectedMs), fmtMs(res.Breakdown.EndpointRemovedMs),
				fmtMs(res.Breakdown.FirstLTEByteMs), fmtMs(res.Breakdown.FirstNewByteMs), res.FaultCounters["conc.DuplicateData"], res.DuplicateData, res.LostBytes, res.Hung,
				res.LTECarryingBeforeFault, res.Error)
			rep.summarize(byKey, keys, lteRTT)
			b, _ := json.MarshalIndent(rep, "", "  ")
			if err := os.WriteFile(*out, b, 0o644); err != nil {
				return err
			}
		}
	}
	if *plot != "" {
		if err := os.WriteFile(*plot, []byte(reinjectionSVG(byKey, keys, scenarios)), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%-28s %6s %5s %5s %10s %10s %10s %10s %9s %9s\n", "arm", "trials", "hung", "lost", "stall p50", "stall p90", "stall p100", "dup fault", "dup run", "lte Mb/s")
	for _, k := range keys {
		st := rep.Stats[k]
		fmt.Fprintf(stdout, "%-28s %6d %5d %5d %10.1f %10.1f %10.1f %10d %9d %9.1f\n", k, st.Trials, st.Hung, st.LostBytes,
			st.FaultStallMs.P50, st.FaultStallMs.P90, st.FaultStallMs.P100, rep.DuplicatesFault[k], rep.DuplicatesTotal[k], st.LTEMbps.P50)
	}
	for _, k := range slices.Sorted(maps.Keys(rep.Verdict)) {
		fmt.Fprintf(stdout, "%s: %s\n", k, rep.Verdict[k])
	}
	fmt.Fprintf(stdout, "report: %s\n", *out)
	if *plot != "" {
		fmt.Fprintf(stdout, "plot: %s\n", *plot)
	}
	return ctx.Err()
}

func fmtMs(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", *p)
}

// trimEvidence keeps a hang's evidence short enough for a report of 80+
// trials: the notes and socket states, not the full counter dumps.
func trimEvidence(e *Evidence) *Evidence {
	if e == nil {
		return nil
	}
	c := *e
	c.RouterNstat, c.ConcNstat = "", ""
	return &c
}

// summarize recomputes the stats and the verdict from the trials so far.
func (rep *ReinjectionReport) summarize(byKey map[string][]*Result, keys []string, lteRTT float64) {
	for _, k := range keys {
		rep.Stats[k] = aggregate(byKey[k])
		var sum, fault int64
		for _, r := range byKey[k] {
			sum += r.DuplicateData
			fault += r.FaultCounters["conc.DuplicateData"]
		}
		rep.DuplicatesTotal[k], rep.DuplicatesFault[k] = sum, fault
	}
	limits := map[string]float64{"cut": 1.5*lteRTT + 10, "blackhole": 1.5*lteRTT + 60}
	for _, k := range keys {
		parts := strings.SplitN(k, "/", 3)
		if len(parts) != 3 || parts[0] == "stock" {
			continue
		}
		st := rep.Stats[k]
		var v []string
		if lim, ok := limits[parts[1]]; ok {
			ok := st.FaultStallMs.N == st.Trials && st.FaultStallMs.P100 <= lim
			v = append(v, fmt.Sprintf("stall p100 %.1f ms vs ≤ %.0f: %s", st.FaultStallMs.P100, lim, passFail(ok)))
		}
		stock := rep.Stats["stock/"+parts[1]+"/"+parts[2]]
		if stock != nil {
			ds, dp := rep.DuplicatesFault["stock/"+parts[1]+"/"+parts[2]], rep.DuplicatesFault[k]
			ratio := math.Inf(1)
			if dp > 0 {
				ratio = float64(ds) / float64(dp)
			}
			v = append(v, fmt.Sprintf("duplicates during the fault %d vs stock %d (%.1f× fewer): %s", dp, ds, ratio, passFail(ratio >= 10)))
			v = append(v, fmt.Sprintf("stall p50 %.1f vs stock %.1f ms", st.FaultStallMs.P50, stock.FaultStallMs.P50))
		}
		v = append(v, fmt.Sprintf("lost %d B, hung %d: %s", st.LostBytes, st.Hung, passFail(st.LostBytes == 0 && st.Hung == 0)))
		rep.Verdict[k] = strings.Join(v, "; ")
	}
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// reinjectionSVG draws, per scenario, the median receive rate per 10 ms
// around the fault over each arm's trials, stock and patched together.
func reinjectionSVG(byKey map[string][]*Result, keys []string, scenarios []Fault) string {
	const W, PH, L, R, T, B, gap = 900.0, 260.0, 60.0, 20.0, 40.0, 40.0, 50.0
	H := T + float64(len(scenarios))*(PH+gap) + B - gap
	pw := W - L - R
	colors := map[string]string{"stock": "#c0392b", "patched": "#1f5fbf", "probe": "#27ae60", "probe-all": "#8e44ad", "lead": "#e67e22"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14">Receive rate around the fault (median of trials per 10 ms): stock vs patched re-injection</text>`+"\n", L)
	for si, sc := range scenarios {
		top := T + float64(si)*(PH+gap)
		series := map[string][]float64{}
		maxY := 1.0
		for _, k := range keys {
			parts := strings.SplitN(k, "/", 3)
			if len(parts) != 3 || parts[1] != string(sc) {
				continue
			}
			med := medianSeries(byKey[k])
			series[k] = med
			for _, v := range med {
				maxY = math.Max(maxY, v)
			}
		}
		maxY = math.Ceil(maxY*1.1/5) * 5
		x := func(ms float64) float64 {
			return L + pw*(ms-AroundFaultFromMs)/float64(AroundFaultToMs-AroundFaultFromMs)
		}
		y := func(v float64) float64 { return top + PH*(1-v/maxY) }
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="13">%s</text>`+"\n", L, top-6, html.EscapeString(string(sc)))
		for v := 0.0; v <= maxY+1e-9; v += maxY / 4 {
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", L, L+pw, y(v), y(v), L-5, y(v)+4, v)
		}
		for ms := float64(AroundFaultFromMs); ms <= AroundFaultToMs; ms += 100 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>`+"\n", x(ms), top+PH+15, ms)
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="black" stroke-dasharray="4 3"/>`+"\n", x(0), x(0), top, top+PH)
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="black"/>`+"\n", L, top, pw, PH)
		fmt.Fprintf(&b, `<text x="15" y="%.1f" transform="rotate(-90 15 %.1f)" text-anchor="middle">Mbit/s</text>`+"\n", top+PH/2, top+PH/2)
		row := 0
		for _, k := range keys {
			med, ok := series[k]
			if !ok {
				continue
			}
			arm := strings.SplitN(k, "/", 2)[0]
			dash := ""
			if strings.HasSuffix(k, "/no-nudge") {
				dash = ` stroke-dasharray="6 3"`
			}
			var pts []string
			for i, v := range med {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(AroundFaultFromMs+float64(i)*10+5), y(v)))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", colors[arm], dash, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s (n=%d)</text>`+"\n", L+pw-230, top+16+float64(row)*14, colors[arm], html.EscapeString(k), len(byKey[k]))
			row++
		}
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">ms after the fault</text>`+"\n", L+pw/2, H-8)
	b.WriteString("</svg>\n")
	return b.String()
}

// medianSeries is the per-bin median of the trials' AroundFault series.
func medianSeries(rs []*Result) []float64 {
	n := 0
	for _, r := range rs {
		n = max(n, len(r.AroundFault))
	}
	out := make([]float64, n)
	for i := range out {
		var vs []float64
		for _, r := range rs {
			if i < len(r.AroundFault) {
				vs = append(vs, r.AroundFault[i])
			}
		}
		if len(vs) > 0 {
			slices.Sort(vs)
			out[i] = vs[len(vs)/2]
		}
	}
	return out
}

// parseLimits reads --limits: distinct values of the sysctl, 0 among them
// (the stock arm every other arm is judged against).
func parseLimits(v string) ([]int, error) {
	var ls []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if _, ok := limitNames[n]; err != nil || !ok {
			return nil, fmt.Errorf("--limits %q: %q is not one of %v", v, f, slices.Sorted(maps.Keys(limitNames)))
		}
		if slices.Contains(ls, n) {
			return nil, fmt.Errorf("--limits %q: %d twice", v, n)
		}
		ls = append(ls, n)
	}
	if !slices.Contains(ls, 0) || len(ls) < 2 {
		return nil, fmt.Errorf("--limits %q: want 0 (stock) and at least one other", v)
	}
	return ls, nil
}
