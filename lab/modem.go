package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lifeline-router/lifeline/appliance/config"
)

// startModem runs the modem simulator in the ISP namespace with its data
// call wired to the ISP side of the LTE veth: until the supervisor has
// brought the call up over AT commands, wwan0 has no carrier, as a real
// WWAN link carries nothing before its data call. It returns the config
// section that points the supervisor at the simulator's port.
func (w *World) startModem(ctx context.Context, bin, profile string) (*config.Modem, error) {
	lte := w.Path("lte")
	if lte == nil {
		return nil, fmt.Errorf("modem: the world has no lte path")
	}
	if _, err := run(ctx, "ip", "-n", w.ISP, "link", "set", lte.ISPDev, "down"); err != nil {
		return nil, fmt.Errorf("modem: taking %s down until the data call: %w", lte.ISPDev, err)
	}
	port := filepath.Join(w.Dir, "ttyModem")
	if _, err := w.start("modemsim", w.ISP, false, bin,
		"--profile", profile, "--port-link", port,
		"--link-cmd-up", "ip link set "+lte.ISPDev+" up",
		"--link-cmd-down", "ip link set "+lte.ISPDev+" down"); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(port); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("modem: simulator's port %s did not appear within 10s", port)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return &config.Modem{Port: port, Uplink: "lte", APN: "internet", Link: "none",
		PollInterval: config.Duration(time.Second)}, nil
}
