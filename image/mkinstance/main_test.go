package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func supplicantCfg(dir string) map[string]any {
	return map[string]any{"PackageConfig": map[string]any{
		supplicantPkg: map[string]any{"DontStart": true, "ExtraFilePaths": map[string]any{"/usr/lib/wpa_supplicant": dir}},
	}}
}

func TestBundleSupplicant(t *testing.T) {
	src := "/usr/sbin/wpa_supplicant"
	if _, err := os.Stat(src); err != nil {
		t.Skipf("needs Debian's wpa_supplicant (apt-get install wpasupplicant): %v", err)
	}
	dir := filepath.Join(t.TempDir(), "wpa_supplicant")
	if err := bundleSupplicant(supplicantCfg(dir), src); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"wpa_supplicant", "ld-linux-x86-64.so.2", "libc.so.6", "libnl-genl-3.so.200", "MANIFEST"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("bundle lacks %s: %v", f, err)
		}
	}
	m, _ := os.ReadFile(filepath.Join(dir, "MANIFEST"))
	if !strings.Contains(string(m), "wpa_supplicant\t"+src) {
		t.Errorf("MANIFEST does not name the source:\n%s", m)
	}
}

func TestBundleSupplicantErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	err := bundleSupplicant(supplicantCfg(dir), "/nonexistent/wpa_supplicant")
	if err == nil || !strings.Contains(err.Error(), "-wpa-supplicant /nonexistent/wpa_supplicant") || !strings.Contains(err.Error(), "apt-get install wpasupplicant") {
		t.Errorf("missing binary: %v", err)
	}
	// Without the package in the config there is nothing to bundle.
	if err := bundleSupplicant(map[string]any{}, "/nonexistent/wpa_supplicant"); err != nil {
		t.Errorf("no supplicant package: %v", err)
	}
	bad := map[string]any{"PackageConfig": map[string]any{
		supplicantPkg: map[string]any{"ExtraFilePaths": map[string]any{"/usr/lib/wpa_supplicant": 7.0}},
	}}
	if err := bundleSupplicant(bad, "/usr/sbin/wpa_supplicant"); err == nil || !strings.Contains(err.Error(), "ExtraFilePaths[/usr/lib/wpa_supplicant]") {
		t.Errorf("non-string path: %v", err)
	}
}
