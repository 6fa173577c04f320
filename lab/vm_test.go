package lab

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeline-router/lifeline/vmtest"
)

// TestVMLabFailover runs one fiber cut in the lab inside our kernel:
// kernel WireGuard, netem ISP links, CAKE on the router. It checks what
// the VM lab is for (the right kernel pieces in use) and that the upload
// survives the cut; timing is the benchmark's business.
func TestVMLabFailover(t *testing.T) {
	vmtest.Skip(t)
	dir := t.TempDir()
	for _, name := range []string{"lifeline", "lifeline-lab"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
		}
	}
	var stdout, stderr bytes.Buffer
	err := Main(context.Background(), []string{"vm", "--bin-dir", dir, "--timeout", "8m", "--",
		"failover", "--scenario", "cut", "--size", "8MB", "--fiber", "20mbit", "--lte", "8mbit",
		"--cut-at", "2s", "--restore-after", "2s", "--json"}, &stdout, &stderr)
	t.Logf("stderr:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("lifeline-lab vm -- failover: %v\n%s", err, vmtest.LastLines(stdout.String(), 40))
	}
	// The guest's output: progress on stderr, then the indented JSON object.
	lines := strings.Split(stdout.String(), "\n")
	first, last := -1, -1
	for k, l := range lines {
		if l == "{" && first < 0 {
			first = k
		}
		if l == "}" {
			last = k
		}
	}
	if first < 0 || last < first {
		t.Fatalf("no JSON result in the guest's output:\n%s", vmtest.LastLines(stdout.String(), 40))
	}
	var r Result
	if err := json.Unmarshal([]byte(strings.Join(lines[first:last+1], "\n")), &r); err != nil {
		t.Fatalf("result: %v\n%s", err, vmtest.LastLines(stdout.String(), 40))
	}
	if r.TunnelKinds["fiber"] != "wireguard" || r.TunnelKinds["lte"] != "wireguard" {
		t.Errorf("tunnel kinds %v, want the kernel's wireguard for both", r.TunnelKinds)
	}
	if !strings.Contains(r.Shaper["fiber"], "qdisc cake") {
		t.Errorf("fiber shaper is not CAKE:\n%s", r.Shaper["fiber"])
	}
	if !strings.Contains(r.ISPLinks["lte"], "qdisc netem") || !strings.Contains(r.ISPLinks["lte"], "delay 20ms") {
		t.Errorf("LTE ISP link is not netem with 20 ms each way:\n%s", r.ISPLinks["lte"])
	}
	if !r.SHA256Match || r.LostBytes != 0 || !r.ConnectionSurvived || r.Hung {
		t.Errorf("upload: sha256 match %v, lost %d, survived %v, hung %v", r.SHA256Match, r.LostBytes, r.ConnectionSurvived, r.Hung)
	}
	if r.Breakdown.EndpointRemovedMs == nil || r.Breakdown.FirstLTEByteMs == nil {
		t.Errorf("no failover: endpoint removed at %s ms, first LTE byte at %s ms; events %v",
			fmtMs(r.Breakdown.EndpointRemovedMs), fmtMs(r.Breakdown.FirstLTEByteMs), r.Events)
	}
}

func TestExtractVMFiles(t *testing.T) {
	mk := func(files map[string]string) string {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for name, data := range files {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
			tw.Write([]byte(data))
		}
		tw.Close()
		return "noise\n" + vmFilesBegin + "\n" + base64.StdEncoding.EncodeToString(b.Bytes()) + "\n" + vmFilesEnd + "\n"
	}
	dir := t.TempDir()
	files, err := extractVMFiles(mk(map[string]string{"./build/bench/x.json": "{}"}), dir)
	if err != nil || len(files) != 1 {
		t.Fatalf("extractVMFiles = %v, %v", files, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "build/bench/x.json")); err != nil || string(b) != "{}" {
		t.Errorf("extracted file = %q, %v", b, err)
	}
	if _, err := extractVMFiles(mk(map[string]string{"../evil": "x"}), dir); err == nil || !strings.Contains(err.Error(), "leaves the output directory") {
		t.Errorf("a path leaving the directory: err = %v", err)
	}
	if _, err := extractVMFiles("no block here", dir); err == nil {
		t.Error("output without a file block: no error")
	}
	var w bytes.Buffer
	f := &vmFilter{w: &w}
	f.Write([]byte("a\n" + vmFilesBegin + "\nQUJD\n" + vmFilesEnd + "\nb\n"))
	if w.String() != "a\nb\n" {
		t.Errorf("vmFilter passed %q, want the lines around the file block", w.String())
	}
}
