// Package image holds the gokrazy instance that defines the Lifeline image
// (config.json, config.test.json) and its tools: mkinstance writes a gok
// instance from them, vm boots the result, otacommit finishes OTA test boots.
package image

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
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
		PackageConfig map[string]struct {
			CommandLineFlags []string
			ExtraFilePaths   map[string]string
		}
		Update *struct{ HTTPPassword string }
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
	flagVal := func(name string) string {
		for i := 0; i+1 < len(flags); i++ {
			if flags[i] == name {
				return flags[i+1]
			}
		}
		return ""
	}
	if len(flags) == 0 || flags[0] != "run" || flagVal("--config") != "/perm/lifeline/config.json" {
		t.Errorf("supervisor flags = %q, want run ... --config /perm/lifeline/config.json", flags)
	}
	if !slices.Contains(flags, "--console") {
		t.Errorf("supervisor flags = %q lack --console (state changes on the serial console)", flags)
	}
	// First boot: the config shipped in the image is provisioned to /perm.
	from := flagVal("--provision-from")
	if from == "" {
		t.Fatalf("supervisor flags = %q lack --provision-from", flags)
	}
	src := cfg.PackageConfig["github.com/lifeline-router/lifeline/cmd/lifeline"].ExtraFilePaths[from]
	if src == "" {
		t.Fatalf("no ExtraFilePaths entry puts %s into the image", from)
	}
	if _, err := config.Load(filepath.Join("..", src)); err != nil {
		t.Errorf("the image's default config %s: %v", src, err)
	}
}
