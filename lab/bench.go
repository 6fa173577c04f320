package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Dist summarises one figure over the trials that produced it.
type Dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P100 float64 `json:"p100"`
	Min  float64 `json:"min"`
}

func dist(vs []float64) Dist {
	if len(vs) == 0 {
		return Dist{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	q := func(p float64) float64 { return s[int(math.Ceil(p*float64(len(s))))-1] }
	return Dist{N: len(s), P50: q(0.5), P90: q(0.9), P100: s[len(s)-1], Min: s[0]}
}

// ScenarioStats aggregates the trials of one scenario.
type ScenarioStats struct {
	Trials      int   `json:"trials"`
	Hung        int   `json:"hung"`
	Failed      int   `json:"failed"`
	SHA256Match int   `json:"sha256_match"`
	Survived    int   `json:"connection_survived"`
	LostBytes   int64 `json:"lost_bytes"`
	// LTEBeforeFault counts trials in which LTE already carried data when
	// the fault came (a false "down" of the fiber before it).
	LTEBeforeFault int             `json:"lte_carrying_before_fault"`
	FaultStallMs   Dist            `json:"fault_stall_ms"`
	MaxStallMs     Dist            `json:"max_stall_ms"`
	RestoreStallMs Dist            `json:"restore_stall_ms"`
	Breakdown      map[string]Dist `json:"breakdown"`
	FailbackMs     Dist            `json:"failback_ms"`
	NoFailback     int             `json:"no_failback"`
	DuplicateData  Dist            `json:"duplicate_data"`
	// The fault's stall split by whether the receiver saw duplicate data
	// (re-injection from a stale acknowledged point) or none.
	StallWithDupMs Dist `json:"fault_stall_with_duplicates_ms"`
	StallNoDupMs   Dist `json:"fault_stall_without_duplicates_ms"`
	FiberMbps      Dist `json:"fiber_mbps"`
	LTEMbps        Dist `json:"lte_mbps"`
	RestoreMbps    Dist `json:"restore_mbps"`
	// Goodput as a share of each path's payload ceiling (p50 of trials).
	FiberGoodputShare float64  `json:"fiber_goodput_of_ceiling"`
	LTEGoodputShare   float64  `json:"lte_goodput_of_ceiling"`
	Errors            []string `json:"errors,omitempty"`
	// RelayLateMaxMs is, per trial, the most any ISP relay (the lab's own delay element)
	// delivered a datagram after its due time; LabStalls counts the trials in which that
	// exceeded LabStallMs. Arrivals are the kernel's receive stamps, so a relay whose
	// reader was not scheduled shows here: such a trial measured the lab, not Lifeline.
	RelayLateMaxMs Dist `json:"relay_late_max_ms"`
	LabStalls      int  `json:"lab_stalls"`
	// RestoresWithoutKick counts cut and flap trials whose fiber came back
	// without the supervisor's neighbour_kick: such a fail-back waits for
	// the ARP timer the dead link left running (~0.5 s late).
	RestoresWithoutKick int `json:"restores_without_kick"`
}

// restoredWithoutKick: r's carrier came back (a cut or a flap that reached
// its restore) and no neighbour_kick for the fiber followed.
func restoredWithoutKick(r *Result) bool {
	if (r.Scenario != string(FaultCut) && r.Scenario != string(FaultFlap)) || r.RestoreAtMs <= 0 {
		return false
	}
	restore := r.RestoreAtMs - r.FaultAtMs // events are relative to the fault
	for _, e := range r.Events {
		if e.Event == "neighbour_kick" && e.Uplink == "fiber" && e.Ms >= restore-5 {
			return false
		}
	}
	return true
}

// LabStallMs: a relay this late stalled the path by itself (under load it is 13–16 ms late
// at most).
const LabStallMs = 100

// relayLateMaxMs is the worst lateness of any relay of r, both directions.
func relayLateMaxMs(r *Result) float64 {
	var worst time.Duration
	for _, st := range r.Relays {
		worst = max(worst, st.LateMax[0], st.LateMax[1])
	}
	return float64(worst) / float64(time.Millisecond)
}

// BenchReport is build/bench/failover.json.
type BenchReport struct {
	Started  time.Time                 `json:"started"`
	Host     string                    `json:"host"`
	Settings map[string]string         `json:"settings"`
	Ceiling  map[string]any            `json:"payload_ceiling"`
	Goals    map[string]string         `json:"goals"`
	Stats    map[string]*ScenarioStats `json:"scenarios"`
	Trials   []*Result                 `json:"trials"`
}

func aggregate(rs []*Result) *ScenarioStats {
	st := &ScenarioStats{Trials: len(rs), Breakdown: map[string]Dist{}}
	var fs, ms, rst, fb, dup, fm, lm, rm, withDup, noDup, late []float64
	bd := map[string][]float64{}
	for _, r := range rs {
		if len(r.Relays) > 0 {
			l := relayLateMaxMs(r)
			late = append(late, l)
			if l > LabStallMs {
				st.LabStalls++
			}
		}
		if r.Hung {
			st.Hung++
		}
		if restoredWithoutKick(r) {
			st.RestoresWithoutKick++
		}
		if r.Error != "" {
			st.Failed++
			st.Errors = append(st.Errors, r.Error)
		}
		if r.SHA256Match {
			st.SHA256Match++
		}
		if r.ConnectionSurvived {
			st.Survived++
		}
		st.LostBytes += r.LostBytes
		if r.LTECarryingBeforeFault {
			st.LTEBeforeFault++
		}
		if r.FaultAtMs == 0 {
			continue
		}
		fs = append(fs, r.FaultStallMs)
		if r.DuplicateData > 0 {
			withDup = append(withDup, r.FaultStallMs)
		} else {
			noDup = append(noDup, r.FaultStallMs)
		}
		ms = append(ms, r.MaxStallMs)
		rst = append(rst, r.RestoreStallMs)
		dup = append(dup, float64(r.DuplicateData))
		fm = append(fm, r.FiberMbps)
		lm = append(lm, r.LTEMbps)
		if r.FailbackMs != nil {
			fb = append(fb, *r.FailbackMs)
			rm = append(rm, r.RestoreMbps)
		} else {
			st.NoFailback++
		}
		for k, p := range map[string]*float64{
			"detected_ms": r.Breakdown.DetectedMs, "endpoint_removed_ms": r.Breakdown.EndpointRemovedMs,
			"first_lte_byte_ms": r.Breakdown.FirstLTEByteMs, "first_new_byte_ms": r.Breakdown.FirstNewByteMs,
		} {
			if p != nil {
				bd[k] = append(bd[k], *p)
			}
		}
	}
	st.FaultStallMs, st.MaxStallMs, st.RestoreStallMs = dist(fs), dist(ms), dist(rst)
	st.FailbackMs, st.DuplicateData = dist(fb), dist(dup)
	st.StallWithDupMs, st.StallNoDupMs = dist(withDup), dist(noDup)
	st.FiberMbps, st.LTEMbps, st.RestoreMbps = dist(fm), dist(lm), dist(rm)
	st.RelayLateMaxMs = dist(late)
	for k, v := range bd {
		st.Breakdown[k] = dist(v)
	}
	if len(rs) > 0 && rs[0].FiberCeilingMbps > 0 {
		st.FiberGoodputShare = st.FiberMbps.P50 / rs[0].FiberCeilingMbps
		st.LTEGoodputShare = st.LTEMbps.P50 / rs[0].LTECeilingMbps
	}
	return st
}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	wf := addWorldFlags(fs)
	fo := addFailoverFlags(fs)
	fo.size = sizeFlag(benchSize)
	fo.cutAt = durFlag(benchCutAt)
	fo.restoreAfter = durFlag(benchRestoreAfter)
	trials := fs.Int("trials", 20, "trials per scenario")
	scen := fs.String("scenarios", "cut,blackhole,flap", "comma-separated scenarios")
	out := fs.String("out", "build/bench/failover.json", "report file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *trials < 1 {
		return fmt.Errorf("--trials %d: want at least 1", *trials)
	}
	scenarios, err := parseScenarios(*scen)
	if err != nil {
		return err
	}
	o, err := fo.options(wf, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	host, _ := os.Hostname()
	rep := &BenchReport{
		Started: time.Now(), Host: host, Stats: map[string]*ScenarioStats{},
		Ceiling: map[string]any{
			"payload_share": PayloadShare,
			"formula":       "ceiling = shaper rate × (MTU 1420 − IPv4 20 − TCP 20 − timestamps 12 − MPTCP DSS 28) / (MTU 1420 + WireGuard 32 + UDP 8 + IPv4 20 + Ethernet 14) = shaper × 1340/1494",
		},
		Goals: map[string]string{
			"cut":       "fault stall p100 ≤ LTE RTT + 110 ms, 0 lost, 0 hung",
			"blackhole": "fault stall p100 ≤ LTE RTT + 160 ms, 0 lost, 0 hung",
			"failback":  "≥ 90 % of the fiber rate within 1 s of the restore",
			"goodput":   "≥ 98 % of each path's payload ceiling",
		},
	}
	byScen := map[Fault][]*Result{}
	for i := 0; i < *trials; i++ {
		for _, sc := range scenarios {
			if ctx.Err() != nil {
				break
			}
			oo := o
			oo.Scenario = sc
			oo.Seed = uint64(i + 1)
			oo.World.Seed = uint64(i + 1)
			res, err := Failover(ctx, oo)
			if ctx.Err() != nil {
				break // interrupted: not a trial
			}
			if res == nil {
				res = &Result{Scenario: string(sc), Error: fmt.Sprint(err)}
			}
			if rep.Settings == nil {
				rep.Settings = res.Settings
			}
			res.Series, res.SubflowSeries = nil, nil
			byScen[sc] = append(byScen[sc], res)
			rep.Trials = append(rep.Trials, res)
			bd := func(p *float64) string {
				if p == nil {
					return "-"
				}
				return fmt.Sprintf("%.0f", *p)
			}
			fmt.Fprintf(stderr, "%-9s %2d/%d: stall %6.1f ms (det %s rm %s lte %s new %s) max %6.1f failback %s dup %d lost %d hung %v %s\n",
				sc, i+1, *trials, res.FaultStallMs, bd(res.Breakdown.DetectedMs), bd(res.Breakdown.EndpointRemovedMs),
				bd(res.Breakdown.FirstLTEByteMs), bd(res.Breakdown.FirstNewByteMs), res.MaxStallMs, bd(res.FailbackMs),
				res.DuplicateData, res.LostBytes, res.Hung, res.Error)
			if res.LTECarryingBeforeFault {
				fmt.Fprintf(stderr, "          (LTE was already carrying data before the fault)\n")
			}
			if l := relayLateMaxMs(res); l > LabStallMs {
				fmt.Fprintf(stderr, "          (lab stall: a relay delivered %.0f ms late; this trial measured the lab)\n", l)
			}
			for _, s := range scenarios {
				rep.Stats[string(s)] = aggregate(byScen[s])
			}
			// Rewrite after every trial: a long run interrupted still leaves a report.
			b, _ := json.MarshalIndent(rep, "", "  ")
			if err := os.WriteFile(*out, b, 0o644); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(stdout, "%-9s %6s %5s %5s %10s %10s %10s %10s %10s %9s %9s %10s\n", "scenario", "trials", "hung", "lost", "stall p50", "stall p100", "max p100", "failback50", "failback100", "fiber/ceil", "lte/ceil", "lab stalls")
	for _, sc := range scenarios {
		st := rep.Stats[string(sc)]
		if st == nil {
			continue
		}
		fmt.Fprintf(stdout, "%-9s %6d %5d %5d %10.1f %10.1f %10.1f %10.1f %10.1f %9.3f %9.3f %10d\n", sc, st.Trials, st.Hung, st.LostBytes,
			st.FaultStallMs.P50, st.FaultStallMs.P100, st.MaxStallMs.P100, st.FailbackMs.P50, st.FailbackMs.P100, st.FiberGoodputShare, st.LTEGoodputShare, st.LabStalls)
	}
	fmt.Fprintf(stdout, "report: %s\n", *out)
	return ctx.Err()
}

// parseScenarios reads --scenarios: a comma-separated list of faults.
func parseScenarios(list string) ([]Fault, error) {
	var fs []Fault
	for _, s := range strings.Split(list, ",") {
		f, err := ParseFault(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--scenarios: %w", err)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// Bench defaults: long enough for a steady fiber rate before the fault and
// a fail-back after it (80 MB: ~2 s of fiber, 3 s of LTE, the rest after
// the restore), short enough for 60 trials in about 20 minutes.
const (
	benchSize         = 80e6
	benchCutAt        = 2 * time.Second
	benchRestoreAfter = 3 * time.Second
)
