// Command lifeline-modemsim runs a simulated modem on a pseudo-terminal for
// tests, the lab and the demo; see package modem/sim.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/lifeline-router/lifeline/modem/sim"
)

func main() {
	if err := logic(); err != nil {
		fmt.Fprintln(os.Stderr, "lifeline-modemsim:", err)
		os.Exit(1)
	}
}

func shell(cmd string) func() error {
	if cmd == "" {
		return nil
	}
	return func() error {
		out, err := exec.Command("/bin/sh", "-c", cmd).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", cmd, err, out)
		}
		return nil
	}
}

func logic() error {
	profile := flag.String("profile", "", "profile file (modem/testdata/profiles/*.json)")
	portLink := flag.String("port-link", "", "keep a symlink to the current pty here")
	up := flag.String("link-cmd-up", "", "shell command run when the data call goes up (e.g. ip link set wwan0 up)")
	down := flag.String("link-cmd-down", "", "shell command run when the data call goes down")
	verbose := flag.Bool("v", false, "log every command and event to stderr")
	flag.Parse()
	if *profile == "" {
		return fmt.Errorf("--profile is required")
	}
	p, err := sim.LoadProfile(*profile)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	opts := sim.Options{
		PortLink: *portLink,
		LinkUp:   shell(*up),
		LinkDown: shell(*down),
		// The path goes to stdout, one line per (re-)creation, so a
		// script can read it.
		OnPath: func(path string) { fmt.Println(path) },
	}
	if *verbose {
		opts.Logf = log.New(os.Stderr, "", log.Lmicroseconds).Printf
	}
	if _, err := sim.Start(ctx, p, opts); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
