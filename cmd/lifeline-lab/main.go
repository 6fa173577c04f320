// Command lifeline-lab builds the network-namespace fail-over lab and runs
// uploads, demos and benchmarks through it. See package lab.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/lifeline-router/lifeline/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := lab.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lifeline-lab:", err)
		stop()
		os.Exit(1)
	}
}
