package elfbundle

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// hostDynamic returns a dynamically linked program of the host.
func hostDynamic(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/true", "/bin/true"} {
		if interp, _, err := deps(p); err == nil && interp != "" {
			return p
		}
	}
	t.Skip("no dynamically linked /usr/bin/true on this host")
	return ""
}

func TestWriteClosure(t *testing.T) {
	src := hostDynamic(t)
	dir := filepath.Join(t.TempDir(), "b")
	b, err := Write(src, "prog", dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Files[0].Name != "prog" || b.Files[1].Name != b.Interpreter {
		t.Errorf("files %+v: want the program, then the interpreter first", b.Files)
	}
	names := map[string]bool{}
	for _, f := range b.Files {
		names[f.Name] = true
		st, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s not executable: %v", f.Name, st.Mode())
		}
		if len(f.SHA256) != 64 {
			t.Errorf("%s: sha256 %q", f.Name, f.SHA256)
		}
	}
	// Every DT_NEEDED of every file is in the bundle.
	for _, f := range b.Files {
		_, needed, err := deps(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needed {
			if !names[n] {
				t.Errorf("%s needs %s, not in the bundle %v", f.Name, n, names)
			}
		}
	}
	m, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m), "prog\t"+b.Files[0].Source) || !strings.Contains(string(m), "libc.so.6\t") {
		t.Errorf("MANIFEST:\n%s", m)
	}
	// The bundle runs through its own loader.
	out, err := exec.Command(filepath.Join(dir, b.Interpreter), "--library-path", dir, filepath.Join(dir, "prog")).CombinedOutput()
	if err != nil {
		t.Errorf("bundled true through its loader: %v\n%s", err, out)
	}
	// Writing again replaces, not merges.
	if err := os.WriteFile(filepath.Join(dir, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(src, "prog", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); err == nil {
		t.Errorf("a second Write kept a stale file")
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Write("/nonexistent/prog", "p", filepath.Join(dir, "a")); err == nil || !strings.Contains(err.Error(), "/nonexistent/prog") {
		t.Errorf("missing program: %v", err)
	}
	if _, err := Write("/usr/bin/true", "a/b", filepath.Join(dir, "a")); err == nil || !strings.Contains(err.Error(), "a/b") {
		t.Errorf("bad name: %v", err)
	}
	// A static Go program has no interpreter: nothing to bundle.
	static := filepath.Join(dir, "static")
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", static, "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if _, err := Write(static, "p", filepath.Join(dir, "b")); err == nil || !strings.Contains(err.Error(), "PT_INTERP") {
		t.Errorf("static program: %v", err)
	}
}
