package cli

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeline-router/lifeline/uplinks/wg"
)

func TestProvisionFirstBoot(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../config/testdata/example.json")
	if err != nil {
		t.Fatal(err)
	}
	// The example names keys under /perm; point them into the test dir.
	perm := filepath.Join(dir, "perm")
	s := strings.ReplaceAll(string(src), "/perm/lifeline", perm)
	from := filepath.Join(dir, "etc-config.json")
	if err := os.WriteFile(from, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(perm, "config.json")
	if err := provision(cfgPath, from, slog.Default()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(cfgPath); err != nil || string(b) != s {
		t.Fatalf("config not copied: %v", err)
	}
	keys := map[string]string{}
	for _, n := range []string{"wg-fiber", "wg-wifi", "wg-lte"} {
		p := filepath.Join(perm, n+".key")
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("key %s not generated: %v", p, err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, st.Mode().Perm())
		}
		k, err := wg.LoadPrivateKey(p)
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = k.String()
	}
	// A second boot changes nothing: neither the (edited) config nor keys.
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(s, `"priority": 300`, `"priority": 301`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := provision(cfgPath, from, slog.Default()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(cfgPath); !strings.Contains(string(b), `"priority": 301`) {
		t.Error("an existing config was overwritten")
	}
	for n, want := range keys {
		k, _ := wg.LoadPrivateKey(filepath.Join(perm, n+".key"))
		if k.String() != want {
			t.Errorf("key %s regenerated", n)
		}
	}
	// A bad provisioning source is an error naming it.
	err = provision(filepath.Join(dir, "other", "config.json"), filepath.Join(dir, "missing.json"), slog.Default())
	if err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("provision from a missing file = %v", err)
	}
}
