// Package cli is `lifeline modem ...`: a person at a serial console (or a
// script with --json) asks the modem what it is, how it hears the network,
// and brings up the data call by hand. It lives apart from cmd/lifeline so
// the command can be tested against the simulator.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/lifeline-router/lifeline/modem"
)

const usage = `usage:
  lifeline modem info --port DEV [--json]
  lifeline modem connect --port DEV --apn APN [--user U --password P --auth none|pap|chap] [--pin PIN] [--json]`

// Main runs `modem <sub> ...`; args may start with "modem".
func Main(args []string, stdout io.Writer) error {
	return MainContext(context.Background(), args, stdout)
}

// MainContext is Main with a context.
func MainContext(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "modem" {
		args = args[1:]
	}
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "info":
		return info(ctx, args[1:], stdout)
	case "connect":
		return connect(ctx, args[1:], stdout)
	}
	return fmt.Errorf("modem %s: unknown subcommand\n%s", args[0], usage)
}

type common struct {
	port    string
	jsonOut bool
	timeout time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.port, "port", "", "AT port of the modem (e.g. /dev/ttyUSB2)")
	fs.BoolVar(&c.jsonOut, "json", false, "print one JSON object")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up after this long")
}

func open(ctx context.Context, port string) (*modem.Client, error) {
	if port == "" {
		return nil, errors.New("--port is required")
	}
	c, err := modem.OpenClient(port, nil)
	if err != nil {
		return nil, err
	}
	if err := c.Init(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", port, err)
	}
	return c, nil
}

func info(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("modem info", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("modem info: %w\n%s", err, usage)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cl, err := open(ctx, c.port)
	if err != nil {
		return err
	}
	defer cl.Close()
	i, err := cl.Info(ctx, 1)
	if err != nil {
		return fmt.Errorf("%s: %w", c.port, err)
	}
	if c.jsonOut {
		return json.NewEncoder(stdout).Encode(i)
	}
	_, err = io.WriteString(stdout, i.String())
	return err
}

func connect(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("modem connect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c common
	c.register(fs)
	var d modem.DataConfig
	var pin string
	fs.StringVar(&d.APN, "apn", "", "access point name")
	fs.StringVar(&d.User, "user", "", "APN user")
	fs.StringVar(&d.Password, "password", "", "APN password")
	fs.StringVar(&d.Auth, "auth", "", "none, pap or chap (default: pap with --user)")
	fs.IntVar(&d.CID, "cid", 1, "PDP context id")
	fs.StringVar(&pin, "pin", "", "SIM PIN, if the SIM asks for one")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("modem connect: %w\n%s", err, usage)
	}
	if d.APN == "" {
		return errors.New("modem connect: --apn is required")
	}
	switch d.Auth {
	case "", "none", "pap", "chap":
	default:
		return fmt.Errorf("modem connect: --auth %q: want none, pap or chap", d.Auth)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cl, err := open(ctx, c.port)
	if err != nil {
		return err
	}
	defer cl.Close()
	sim, err := cl.SIM(ctx)
	if err != nil {
		return err
	}
	if sim == "pin_required" && pin != "" {
		if err := cl.UnlockSIM(ctx, pin); err != nil {
			return fmt.Errorf("SIM PIN: %w", err)
		}
	} else if sim != "ready" {
		return fmt.Errorf("%s: SIM is %s", c.port, sim)
	}
	for {
		reg, _, _, err := cl.Registration(ctx)
		if err != nil {
			return err
		}
		if reg == modem.RegHome || reg == modem.RegRoaming {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not registered (%s) within %v", c.port, reg, c.timeout)
		case <-time.After(time.Second):
		}
	}
	prefix, err := cl.Connect(ctx, d)
	if err != nil {
		return fmt.Errorf("%s: %w", c.port, err)
	}
	i, err := cl.Info(ctx, d.CID)
	if err != nil {
		return err
	}
	if c.jsonOut {
		return json.NewEncoder(stdout).Encode(i)
	}
	how := "address " + prefix.String()
	if !prefix.IsValid() {
		how = "the modem serves DHCP on wwan0"
	}
	_, err = fmt.Fprintf(stdout, "data call up (%s family, %s)\n%s", cl.Family().Name, how, i.String())
	return err
}
