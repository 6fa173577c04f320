// Package cli is the `lifeline` command: the supervisor (run), the
// concentrator, key generation, status for the serial console, and the
// modem tools. cmd/lifeline only calls Main, so every subcommand is testable.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lifeline-router/lifeline/appliance/concentrator"
	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/appliance/modemctl"
	"github.com/lifeline-router/lifeline/appliance/supervisor"
	"github.com/lifeline-router/lifeline/modem"
	modemcli "github.com/lifeline-router/lifeline/modem/cli"
	"github.com/lifeline-router/lifeline/uplinks/wg"
	"github.com/vishvananda/netlink"
)

const usage = `usage: lifeline <command> [flags]

commands:
  run --config FILE            run the router supervisor
  concentrator --config FILE   run the server end (on a VPS)
  keys [--uplinks fiber,lte]   print key pairs and config snippets for both ends
  status [--json]              show uplinks, tunnels, MPTCP, modem, SQM
  modem info|connect ...       talk to the LTE/5G modem
`

// Main runs one subcommand.
func Main(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "run":
		return run(args[1:], stderr)
	case "concentrator":
		return runConcentrator(args[1:], stderr)
	case "keys":
		return keys(args[1:], stdout)
	case "status":
		return status(args[1:], stdout)
	case "modem":
		return modemcli.Main(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("lifeline %s: %w", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("lifeline %s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

func wgMode(s string) (wg.Mode, error) {
	switch s {
	case "auto", "":
		return wg.ModeAuto, nil
	case "kernel":
		return wg.ModeKernel, nil
	case "userspace":
		return wg.ModeUserspace, nil
	}
	return 0, fmt.Errorf("--wireguard: %q: want auto, kernel or userspace", s)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func logger(w io.Writer, debug bool) *slog.Logger {
	lv := slog.LevelInfo
	if debug {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
}

func run(args []string, stderr io.Writer) error {
	fs := newFlags("run")
	cfgPath := fs.String("config", "/perm/lifeline/config.json", "config file")
	events := fs.String("events", "", "append state changes as JSON lines to this file")
	mode := fs.String("wireguard", "auto", "auto, kernel or userspace")
	debug := fs.Bool("debug", false, "debug logging")
	console := fs.String("console-device", "/dev/console", "with --console: where the log is copied")
	toConsole := fs.Bool("console", false, "also write the log to the serial console (gokrazy keeps a service's output off ttyS0)")
	provisionFrom := fs.String("provision-from", "", "first boot: copy this config to --config when it is missing, and generate missing WireGuard keys")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *toConsole {
		f, err := os.OpenFile(*console, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("--console: %w", err)
		}
		defer f.Close()
		stderr = io.MultiWriter(stderr, f)
	}
	m, err := wgMode(*mode)
	if err != nil {
		return err
	}
	log := logger(stderr, *debug)
	if err := provision(*cfgPath, *provisionFrom, log); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	s, err := supervisor.New(supervisor.Options{Config: cfg, Log: log, EventsFile: *events, WGMode: m})
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	errc := make(chan error, 2)
	if mc := cfg.Modem; mc != nil {
		var link modem.Link
		if mc.Link == "netlink" {
			h, err := netlink.NewHandle()
			if err != nil {
				return fmt.Errorf("netlink.NewHandle: %w", err)
			}
			defer h.Close()
			var dev string
			for _, u := range cfg.Uplinks {
				if u.Name == mc.Uplink {
					dev = u.Device
				}
			}
			link = modemctl.NetlinkLink{Handle: h, Device: dev, Log: log}
		}
		svc := modemctl.New(*mc, link, s.SetDemoted, log)
		if err := s.Register(svc); err != nil {
			return fmt.Errorf("registering modem metrics: %w", err)
		}
		s.AddExtra("modem", svc)
		// The modem is slow and may be absent for minutes (USB
		// re-enumeration); it never holds up the tunnels.
		go func() {
			if err := svc.Run(ctx); err != nil {
				log.Error("modem", "err", err)
			}
		}()
	}
	go func() { errc <- s.Run(ctx) }()
	return <-errc
}

func runConcentrator(args []string, stderr io.Writer) error {
	fs := newFlags("concentrator")
	cfgPath := fs.String("config", "/etc/lifeline/config.json", "config file")
	mode := fs.String("wireguard", "auto", "auto, kernel or userspace")
	nft := fs.String("nft", "", "nft binary (- = leave the firewall alone)")
	if err := parse(fs, args); err != nil {
		return err
	}
	m, err := wgMode(*mode)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	return concentrator.Run(ctx, concentrator.Options{Config: cfg, Log: logger(stderr, false), WGMode: m, NFT: *nft})
}

func status(args []string, stdout io.Writer) error {
	fs := newFlags("status")
	addr := fs.String("addr", "127.0.0.1:9120", "supervisor's status address")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + *addr + "/status")
	if err != nil {
		return fmt.Errorf("is the supervisor running? %w", err)
	}
	defer resp.Body.Close()
	var st supervisor.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("decoding /status: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return supervisor.WriteTable(stdout, st)
}

func keys(args []string, stdout io.Writer) error {
	fs := newFlags("keys")
	names := fs.String("uplinks", "fiber,wifi,lte", "comma-separated uplink names")
	if err := parse(fs, args); err != nil {
		return err
	}
	cpriv, cpub, err := wg.GenerateKeyPair()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# concentrator: write the private key to /etc/lifeline/concentrator.key (mode 0600)\n")
	fmt.Fprintf(stdout, "concentrator private key: %s\n", cpriv)
	fmt.Fprintf(stdout, "\"concentrator\": {\"public_key\": %q, \"private_key_file\": \"/etc/lifeline/concentrator.key\", ...}\n\n", cpub.String())
	for i, n := range strings.Split(*names, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			return fmt.Errorf("--uplinks: empty name at position %d", i+1)
		}
		priv, pub, err := wg.GenerateKeyPair()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# uplink %s: router writes the private key to /perm/lifeline/wg-%s.key (mode 0600)\n", n, n)
		fmt.Fprintf(stdout, "%s private key: %s\n", n, priv)
		fmt.Fprintf(stdout, "\"wireguard\": {\"interface\": \"wg-%s\", \"private_key_file\": \"/perm/lifeline/wg-%s.key\", \"public_key\": %q, \"port\": %d, ...}\n\n", n, n, pub.String(), 51820+i)
	}
	return nil
}
