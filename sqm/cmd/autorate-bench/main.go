// Command autorate-bench writes the simulated autorate comparison (package simlink) to
// build/bench/autorate.json with one SVG plot per trace, and prints the table. It exists so
// `make bench-autorate` needs neither root nor a VM: the real-kernel bench (CAKE under qemu)
// is separate and reports its own figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/lifeline-router/lifeline/sqm/autorate/simlink"
)

func main() {
	out := flag.String("out", "build/bench", "directory for autorate.json and the SVG plots")
	seed := flag.Int64("seed", 1, "seed of the jitter and of the random-walk trace")
	flag.Parse()
	r, err := simlink.WriteBench(*out, *seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autorate-bench:", err)
		os.Exit(1)
	}
	fmt.Printf("%s (%s)\ngoal: %s\n\n", *out+"/autorate.json", r.Kind, r.Goal)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tcontroller\tp50 ms\tp95 ms\tp99 ms\tcapacity used\trecovery s\tramp s\trate ramp s\tidle changes/min\t")
	na := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	for _, f := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.3f\t%s\t%s\t%s\t%s\t\n", f.Scenario, f.Controller,
			f.P50AddedMs, f.P95AddedMs, f.P99AddedMs, f.Utilisation, na(f.RecoveryS), na(f.RampS), na(f.RateRampS), na(f.IdleChangesPerMin))
	}
	tw.Flush()
	for _, p := range r.Plots {
		fmt.Println("plot:", *out+"/"+p)
	}
}
