// Command mkinstance writes a gok instance directory (config.json and a
// builddir go.mod) for the Lifeline image into build/gokrazy/<name>.
//
// It exists because the committed image/config.json must stay free of
// secrets and of machine-specific paths: the update password is generated
// once per checkout (build/gokrazy/http-password.txt, never committed), and
// the builddir go.mod points our own module at this checkout with a replace
// directive so that gok builds the working tree, not a published version.
// With -test, image/config.test.json is merged in (the modem simulator goes
// only into test builds). It also writes the wpa_supplicant bundle the image
// carries (see bundleSupplicant).
package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeline-router/lifeline/image/elfbundle"
)

const modulePath = "github.com/lifeline-router/lifeline"

func main() {
	if err := logic(); err != nil {
		fmt.Fprintln(os.Stderr, "mkinstance:", err)
		os.Exit(1)
	}
}

func logic() error {
	root := flag.String("root", ".", "repository root (holds go.mod and image/config.json)")
	out := flag.String("out", "build/gokrazy", "parent directory of the generated instances")
	name := flag.String("name", "lifeline", "instance name")
	test := flag.Bool("test", false, "merge image/config.test.json (test-only packages)")
	hostname := flag.String("hostname", "", "hostname to put in the image (default: instance name)")
	version := flag.String("version", "", "supervisor version string (-ldflags -X ...supervisor.Version), reported by /healthz and status")
	unhealthy := flag.Bool("unhealthy", false, "deliberately broken build for the OTA rollback test: the supervisor never becomes healthy")
	otaDeadline := flag.String("ota-deadline", "", "otacommit -deadline (how long a test boot has to become healthy)")
	device := flag.String("update", "", "host:port of a running device for gok update (sets Update.Hostname/HTTPPort)")
	supplicant := flag.String("wpa-supplicant", "/usr/sbin/wpa_supplicant", "the (Debian, dynamically linked) wpa_supplicant the image carries with its libraries")
	flag.Parse()

	absRoot, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	cfg, err := readJSON(filepath.Join(absRoot, "image", "config.json"))
	if err != nil {
		return err
	}
	if *test {
		extra, err := readJSON(filepath.Join(absRoot, "image", "config.test.json"))
		if err != nil {
			return err
		}
		if err := merge(cfg, extra); err != nil {
			return fmt.Errorf("image/config.test.json: %w", err)
		}
	}
	// ExtraFilePaths are relative to the repository in image/config*.json;
	// gok resolves them against the instance directory.
	if pcs, ok := cfg["PackageConfig"].(map[string]any); ok {
		for _, pc := range pcs {
			efp, _ := pc.(map[string]any)["ExtraFilePaths"].(map[string]any)
			for guest, host := range efp {
				if h, ok := host.(string); ok && !filepath.IsAbs(h) {
					efp[guest] = filepath.Join(absRoot, h)
				}
			}
		}
	}
	if err := bundleSupplicant(cfg, *supplicant); err != nil {
		return err
	}
	pcs, _ := cfg["PackageConfig"].(map[string]any)
	if pcs == nil {
		pcs = map[string]any{}
		cfg["PackageConfig"] = pcs
	}
	pkgConfig := func(pkg string) map[string]any {
		pc, _ := pcs[pkg].(map[string]any)
		if pc == nil {
			pc = map[string]any{}
			pcs[pkg] = pc
		}
		return pc
	}
	const supervisorPkg = modulePath + "/cmd/lifeline"
	if *version != "" {
		pkgConfig(supervisorPkg)["GoBuildFlags"] = []any{
			"-ldflags=-X " + modulePath + "/appliance/supervisor.Version=" + *version,
		}
	}
	if *unhealthy {
		// A config path that does not exist: the supervisor exits at
		// start, gokrazy restarts it, /healthz never answers.
		pkgConfig(supervisorPkg)["CommandLineFlags"] = []any{"run", "--config", "/etc/lifeline/missing.json"}
	}
	if *otaDeadline != "" {
		pkgConfig(modulePath + "/image/otacommit")["CommandLineFlags"] = []any{"-deadline", *otaDeadline}
	}
	if *hostname != "" {
		cfg["Hostname"] = *hostname
	}

	pw, err := password(filepath.Join(absRoot, *out, "http-password.txt"))
	if err != nil {
		return err
	}
	update, _ := cfg["Update"].(map[string]any)
	if update == nil {
		update = map[string]any{}
	}
	update["HTTPPassword"] = pw
	if *device != "" {
		if _, _, err := net.SplitHostPort(*device); err != nil {
			return fmt.Errorf("-update %q: want host:port: %w", *device, err)
		}
		// gok bakes Update.HTTPPort into the image (the device would then
		// listen there); with the default port it dials Update.Hostname
		// as given, so host:port reaches a forwarded port without
		// changing the port the device serves on.
		update["Hostname"] = *device
		delete(update, "HTTPPort")
	}
	cfg["Update"] = update

	dir := filepath.Join(absRoot, *out, *name)
	if err := os.MkdirAll(filepath.Join(dir, "builddir"), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(cfg, "", "    ")
	if err != nil {
		return err
	}
	if err := writeIfChanged(filepath.Join(dir, "config.json"), append(b, '\n')); err != nil {
		return err
	}

	// One go.mod for the whole builddir: gok searches builddir/<pkg>/ up to
	// builddir/ for it, so every package (ours and gokrazy's) resolves
	// against the same requirements as the main module.
	gomod := fmt.Sprintf(`module gokrazy/build/%s

go 1.26.0

require %s v0.0.0-00010101000000-000000000000

replace %s => %s
`, *name, modulePath, modulePath, absRoot)
	goModPath := filepath.Join(dir, "builddir", "go.mod")
	if _, err := os.Stat(goModPath); err == nil {
		// Keep what gok's `go get` added (serial-busybox), but always
		// point the replace directive at this checkout.
		cur, err := os.ReadFile(goModPath)
		if err != nil {
			return err
		}
		if strings.Contains(string(cur), "replace "+modulePath+" => "+absRoot+"\n") {
			gomod = ""
		}
	}
	if gomod != "" {
		if err := os.WriteFile(goModPath, []byte(gomod), 0o644); err != nil {
			return err
		}
		sum, err := os.ReadFile(filepath.Join(absRoot, "go.sum"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "builddir", "go.sum"), sum, 0o644); err != nil {
			return err
		}
	}
	fmt.Println(dir)
	return nil
}

// supplicantPkg is the image's /user/wpa_supplicant: it starts the bundled
// Debian binary through the bundled loader.
const supplicantPkg = modulePath + "/image/wpa_supplicant"

// bundleSupplicant writes the directory that the supplicant package's
// ExtraFilePaths put into the image (build/gokrazy/wpa_supplicant →
// /usr/lib/wpa_supplicant): Debian's wpa_supplicant, its shared libraries
// and glibc's loader, with a MANIFEST of where each came from. It runs on
// every build, so the image carries what the build host has installed.
func bundleSupplicant(cfg map[string]any, bin string) error {
	pcs, _ := cfg["PackageConfig"].(map[string]any)
	pc, _ := pcs[supplicantPkg].(map[string]any)
	efp, _ := pc["ExtraFilePaths"].(map[string]any)
	for guest, host := range efp {
		dir, ok := host.(string)
		if !ok {
			return fmt.Errorf("PackageConfig[%s].ExtraFilePaths[%s]: not a string", supplicantPkg, guest)
		}
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("-wpa-supplicant %s: %w (apt-get install wpasupplicant)", bin, err)
		}
		if _, err := elfbundle.Write(bin, "wpa_supplicant", dir); err != nil {
			return fmt.Errorf("bundling %s for %s: %w", bin, guest, err)
		}
	}
	return nil
}

func readJSON(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// merge adds extra into cfg: the Packages list is appended to, objects are
// merged key by key, everything else (CommandLineFlags too) is replaced.
func merge(cfg, extra map[string]any) error {
	for k, v := range extra {
		switch ev := v.(type) {
		case []any:
			if k != "Packages" {
				cfg[k] = ev
				continue
			}
			cv, _ := cfg[k].([]any)
			if cfg[k] != nil && cv == nil {
				return fmt.Errorf("%s: list in one config, not in the other", k)
			}
			cfg[k] = append(cv, ev...)
		case map[string]any:
			cv, _ := cfg[k].(map[string]any)
			if cfg[k] != nil && cv == nil {
				return fmt.Errorf("%s: object in one config, not in the other", k)
			}
			if cv == nil {
				cv = map[string]any{}
			}
			if err := merge(cv, ev); err != nil {
				return fmt.Errorf("%s.%w", k, err)
			}
			cfg[k] = cv
		default:
			cfg[k] = v
		}
	}
	return nil
}

// password returns the update password stored in path, creating a random one
// on first use.
func password(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if pw := strings.TrimSpace(string(b)); pw != "" {
			return pw, nil
		}
	}
	pw := rand.Text()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", err
	}
	return pw, nil
}

func writeIfChanged(path string, b []byte) error {
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(b) {
		return nil
	}
	return os.WriteFile(path, b, 0o644)
}
