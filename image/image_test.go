// Package image holds the gokrazy instance that defines the Lifeline image
// (config.json, config.test.json) and its tools: mkinstance writes a gok
// instance from them, vm boots the result, otacommit finishes OTA test boots.
package image

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/lifeline-router/lifeline/appliance/config"
)

// TestVMConfigValid keeps the config the test image boots with valid for the
// supervisor's loader, so the boot test fails on the image, not on a typo.
func TestTestImageConfigValid(t *testing.T) {
	if _, err := config.Load("testdata/vm-config.json"); err != nil {
		t.Fatalf("testdata/vm-config.json: %v", err)
	}
}

// TestInstanceConfig checks the committed instance config names what issue 5
// requires: our kernel, the serial console, the supervisor with its gokrazy
// flags, serial busybox, and no test-only package in the production image.
func TestInstanceConfig(t *testing.T) {
	var cfg struct {
		Packages      []string
		SerialConsole string
		KernelPackage string
		PackageConfig map[string]struct{ CommandLineFlags []string }
		Update        *struct{ HTTPPassword string }
	}
	b, err := os.ReadFile("config.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	if cfg.KernelPackage != "github.com/lifeline-router/lifeline/board/amd64" {
		t.Errorf("KernelPackage = %q", cfg.KernelPackage)
	}
	if cfg.SerialConsole != "ttyS0,115200" {
		t.Errorf("SerialConsole = %q", cfg.SerialConsole)
	}
	if cfg.Update != nil && cfg.Update.HTTPPassword != "" {
		t.Errorf("config.json commits an update password; mkinstance generates it")
	}
	has := map[string]bool{}
	for _, p := range cfg.Packages {
		has[p] = true
	}
	for _, p := range []string{
		"github.com/lifeline-router/lifeline/cmd/lifeline",
		"github.com/gokrazy/serial-busybox",
		"github.com/lifeline-router/lifeline/image/otacommit",
	} {
		if !has[p] {
			t.Errorf("Packages lacks %s", p)
		}
	}
	if has["github.com/lifeline-router/lifeline/cmd/lifeline-modemsim"] {
		t.Errorf("the modem simulator belongs in config.test.json only")
	}
	flags := cfg.PackageConfig["github.com/lifeline-router/lifeline/cmd/lifeline"].CommandLineFlags
	if len(flags) < 3 || flags[0] != "run" || flags[1] != "--config" || flags[2] != "/perm/lifeline/config.json" {
		t.Errorf("supervisor flags = %q, want run --config /perm/lifeline/config.json", flags)
	}
}
