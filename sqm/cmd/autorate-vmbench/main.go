// Command autorate-vmbench runs the real-kernel autorate bench (package sqm/vmbench): on the
// host it boots the board kernel under qemu with itself inside, the guest runs every
// contender on every trace of lab/traces plus the seed's CAKE vs fq_codel exercise and prints
// its report, and the host writes build/bench/autorate-vm.json and one SVG per trace and
// direction. It exists because the host kernel has no sch_cake, fq_codel or netem.
//
// Build it static (CGO_ENABLED=0): the guest has no libc. `make bench-autorate-vm` does.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeline-router/lifeline/sqm/autorate/simlink"
	"github.com/lifeline-router/lifeline/sqm/vmbench"
	"github.com/lifeline-router/lifeline/vmtest"
)

// defaultVirtualScale: with a virtual clock the VM carries the full rates, but every packet
// costs wall time (TCG single-threaded, several times slower than real time at 80 Mbit/s
// both ways on a shared host); half the traces' rates keeps `make bench-autorate-vm` near
// a quarter of an hour. A quarter would be faster, but its 0.5 Mbit/s floor is a 24 ms
// frame: nothing like LTE.
const defaultVirtualScale = 0.5

const (
	beginMark = "AUTORATE-VMBENCH-REPORT-BEGIN"
	endMark   = "AUTORATE-VMBENCH-REPORT-END"
)

func main() {
	guest := flag.Bool("guest", false, "run the bench here (inside the VM)")
	clock := flag.String("clock", "virtual", "(guest) the clock the VM runs on, for the report")
	out := flag.String("out", "build/bench", "directory for autorate-vm.json and the SVG plots (host)")
	scale := flag.Float64("scale", 0, "multiply every capacity and rate by this; 0 = 0.5 with the virtual clock, with -real-clock 1 unless the VM carries less than 1.25 × 80 Mbit/s, then scaled to fit")
	seedDur := flag.Duration("seed-dur", 8*time.Second, "duration of each qdisc in the seed's exercise (0 = skip it)")
	only := flag.String("traces", "", "comma-separated trace names (default: all four)")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound of the VM run (host)")
	contenders := flag.String("contenders", "", "comma-separated contenders (default: all five: none, fixed-20mbit, cake-autorate, lifeline, oracle)")
	decisions := flag.Bool("decisions", false, "log every decision of our controller in the guest (inputs and state)")
	realClock := flag.Bool("real-clock", false, "run TCG multi-threaded on the host's clock (faster, but host load shows up as latency) instead of a virtual clock")
	flag.Parse()
	var err error
	if *guest {
		err = runGuest(*scale, *seedDur, *only, *clock, *contenders, *decisions)
	} else {
		err = runHost(*out, *scale, *seedDur, *only, *timeout, *realClock, *contenders, *decisions)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "autorate-vmbench:", err)
		os.Exit(1)
	}
}

func scenarios(only string) ([]vmbench.Scenario, error) {
	all, err := vmbench.Scenarios()
	if err != nil || only == "" {
		return all, err
	}
	var out []vmbench.Scenario
	for _, name := range strings.Split(only, ",") {
		found := false
		for _, s := range all {
			if s.Trace.Name == name {
				out, found = append(out, s), true
			}
		}
		if !found {
			return nil, fmt.Errorf("-traces: unknown trace %q", name)
		}
	}
	return out, nil
}

func runGuest(scale float64, seedDur time.Duration, only, clock, contenders string, decisions bool) error {
	scs, err := scenarios(only)
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	started := time.Now()
	o := vmbench.Options{Logf: logf, Scale: 1, Decisions: decisions}
	if contenders != "" {
		known := map[string]bool{}
		for _, c := range vmbench.Contenders(1) {
			known[c.Name] = true
		}
		for _, n := range strings.Split(contenders, ",") {
			if !known[n] {
				return fmt.Errorf("-contenders: unknown contender %q", n)
			}
			o.Contenders = append(o.Contenders, n)
		}
	}
	b, err := vmbench.NewBench(o)
	if err != nil {
		return err
	}
	defer b.Close()
	ctx := context.Background()
	// Does the VM carry the traces' 80 Mbit/s both ways at once (with a virtual clock it
	// should: only the wall time grows)? A 150 Mbit/s link for a second tells.
	up, down, err := b.MeasureCapacity(ctx, time.Second, 150e6)
	if err != nil {
		return err
	}
	logf("VM capacity through a 150 Mbit/s link, both directions at once: up %.0f Mbit/s, down %.0f Mbit/s", up/1e6, down/1e6)
	if scale == 0 && clock == "virtual" {
		scale = defaultVirtualScale
	}
	if scale == 0 {
		scale = 1
		if m := min(up, down); m < 1.25*80e6 {
			scale = float64(int(m/1.25/80e6*20)) / 20 // down to a multiple of 0.05
			scale = max(scale, 0.05)
		}
	}
	if err := b.SetScale(scale); err != nil {
		return err
	}
	logf("scale %.2f", scale)
	r, err := b.RunAll(ctx, scs, seedDur)
	if err != nil {
		return err
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		r.Kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Version[:])
	}
	r.VMCapacityUp, r.VMCapacityDown = up, down
	r.Clock = clock
	r.WallSeconds = time.Since(started).Seconds()
	js, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// gzip and base64 in short lines: the report with every run's timeline is megabytes of
	// JSON, and one such line through the VM's console once arrived without its markers.
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(js)
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip report: %w", err)
	}
	b64 := base64.StdEncoding.EncodeToString(z.Bytes())
	var out strings.Builder
	fmt.Fprintf(&out, "\n%s\n", beginMark)
	for len(b64) > 0 {
		n := min(len(b64), 100)
		out.WriteString(b64[:n])
		out.WriteByte('\n')
		b64 = b64[n:]
	}
	fmt.Fprintf(&out, "%s\n", endMark)
	_, err = os.Stdout.WriteString(out.String())
	return err
}

// decodeReport undoes runGuest's encoding of the text between the markers.
func decodeReport(text string, r *vmbench.Report) error {
	z, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(text), ""))
	if err != nil {
		return fmt.Errorf("guest report: base64: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		return fmt.Errorf("guest report: gzip: %w", err)
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		return fmt.Errorf("guest report: gzip: %w", err)
	}
	if err := json.Unmarshal(js, r); err != nil {
		return fmt.Errorf("guest report: %w", err)
	}
	return nil
}

// progress passes the guest's log lines through and holds back the report.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	line   bytes.Buffer
	inside bool
}

func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range b {
		if c != '\n' {
			if !p.inside {
				p.line.WriteByte(c)
			}
			continue
		}
		l := p.line.String()
		p.line.Reset()
		switch {
		case strings.HasPrefix(l, beginMark):
			p.inside = true
		case p.inside:
		default:
			fmt.Fprintln(p.w, "guest:", l)
		}
	}
	return len(b), nil
}

func runHost(out string, scale float64, seedDur time.Duration, only string, timeout time.Duration, realClock bool, contenders string, decisions bool) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("os.Executable: %w", err)
	}
	if f, err := elf.Open(exe); err == nil {
		interp := f.Section(".interp")
		f.Close()
		if interp != nil {
			return fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0 (the guest has no libc)", exe)
		}
	}
	clock := "real"
	if !realClock {
		dir, err := os.MkdirTemp("", "autorate-vmbench-")
		if err != nil {
			return fmt.Errorf("MkdirTemp: %w", err)
		}
		defer os.RemoveAll(dir)
		q, err := vmbench.VirtualClockQEMU(dir, 1)
		if err != nil {
			return err
		}
		os.Setenv("QEMU", q)
		clock = "virtual"
	}
	script := fmt.Sprintf("/vmtest/autorate-vmbench -guest -clock %s -scale %g -seed-dur %s -traces '%s' -contenders '%s' -decisions=%v\n",
		clock, scale, seedDur, only, contenders, decisions)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	accel, why := vmtest.Accel()
	fmt.Fprintf(os.Stderr, "booting the board kernel (%s: %s)\n", accel, why)
	res, err := vmtest.Run(ctx, vmtest.Options{
		Files:   map[string]string{"/vmtest/autorate-vmbench": exe},
		Tools:   []string{"/usr/sbin/tc", "/bin/ip"},
		Script:  script,
		Timeout: timeout,
		Output:  &progress{w: os.Stderr},
	})
	if err != nil {
		if res != nil {
			fmt.Fprintln(os.Stderr, res.Console)
		}
		return fmt.Errorf("vmtest.Run: %w", err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("guest exited with %d", res.ExitCode)
	}
	i, j := strings.Index(res.Output, beginMark), strings.Index(res.Output, endMark)
	if i < 0 || j < i {
		return fmt.Errorf("guest printed no report (begin marker at %d, end marker at %d in %d bytes of output)", i, j, len(res.Output))
	}
	var r vmbench.Report
	if err := decodeReport(res.Output[i+len(beginMark):j], &r); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("MkdirAll(%s): %w", out, err)
	}
	if r.Plots, err = writePlots(out, &r); err != nil {
		return err
	}
	// The timelines, for whoever wants to look closer than the plots.
	if js, err := json.Marshal(r.Runs); err == nil {
		os.WriteFile(filepath.Join(out, "autorate-vm-runs.json"), js, 0o644)
	}
	r.Runs = nil
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(out, "autorate-vm.json")
	if err := os.WriteFile(p, append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("WriteFile(%s): %w", p, err)
	}
	printTable(p, &r, res.Duration)
	return nil
}

var colors = map[string]string{"none": "#7f7f7f", "fixed-20mbit": "#2ca02c", "cake-autorate": "#ff7f0e", "lifeline": "#1f77b4", "oracle": "#9467bd"}

func writePlots(dir string, r *vmbench.Report) ([]string, error) {
	scs, err := vmbench.Scenarios()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, sc := range scs {
		for _, up := range []bool{true, false} {
			ssc, series := vmbench.PlotSeries(sc, r.Runs, r.Scale, up, colors)
			if len(series) == 0 {
				continue
			}
			name := "autorate-vm-" + ssc.Name + ".svg"
			p := filepath.Join(dir, name)
			f, err := os.Create(p)
			if err != nil {
				return nil, fmt.Errorf("Create(%s): %w", p, err)
			}
			err = simlink.WritePlot(f, ssc, series)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("WritePlot(%s): %w", p, err)
			}
			names = append(names, name)
		}
	}
	return names, nil
}

func printTable(path string, r *vmbench.Report, d time.Duration) {
	fmt.Printf("%s (kernel %s; VM %v; VM capacity up %.0f / down %.0f Mbit/s, scale %.2f)\ngoal: %s\n\n",
		path, strings.Fields(r.Kernel + " ?")[0], d.Round(time.Second), r.VMCapacityUp/1e6, r.VMCapacityDown/1e6, r.Scale, r.Goal)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "trace\tdirection\tcontroller\tp50 ms\tp95 ms\tp99 ms\tcapacity used\trecovery s\tramp s\trate ramp s\tidle changes/min\tprobes lost\t")
	na := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	for _, f := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.3f\t%s\t%s\t%s\t%s\t%.3f\t\n", f.Scenario, f.Direction, f.Controller,
			f.P50AddedMs, f.P95AddedMs, f.P99AddedMs, f.Utilisation, na(f.RecoveryS), na(f.RampS), na(f.RateRampS), na(f.IdleChangesPerMin), f.LostProbes)
	}
	tw.Flush()
	if len(r.SeedExercise) > 0 {
		fmt.Printf("\nseed exercise: %s\n", r.SeedNote)
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "qdisc\tidle RTT ms\tp50 RTT ms\tp95 RTT ms\tp99 RTT ms\tupload used\t")
		for _, s := range r.SeedExercise {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.3f\t\n", s.Qdisc, s.IdleRTTMs, s.P50RTTMs, s.P95RTTMs, s.P99RTTMs, s.UploadUsed)
		}
		tw.Flush()
	}
	for _, p := range r.Plots {
		fmt.Println("plot:", filepath.Join(filepath.Dir(path), p))
	}
}
