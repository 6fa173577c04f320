// Command lifeline is the router supervisor, the concentrator, and their
// tools; see appliance/cli.
package main

import (
	"fmt"
	"os"

	"github.com/lifeline-router/lifeline/appliance/cli"
)

func main() {
	if err := cli.Main(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lifeline:", err)
		os.Exit(1)
	}
}
