// Command selftest runs the kernel's own MPTCP selftests
// (tools/testing/selftests/net/mptcp of linux-source-6.12) in QEMU, once on
// each kernel given, and compares the results (make kernel-selftest).
//
// It exists because the board kernel carries an MPTCP patch (issue 7): the
// patch must not change what upstream's own tests say, and the selftests'
// aggregation cases (simult_flows.sh) must keep their throughput. Running
// them on the patched board kernel and on a stock kernel built from the same
// source and config, in the same VM setup and the same session, is what makes
// the two comparable.
//
// Each script gets its own VM boot per kernel (vmtest.Run): a busybox
// initramfs with the scripts, their C helpers (prepare.sh builds them) and
// the host's bash, iproute2, nftables, iptables and coreutils. Results come
// from the scripts' closing TAP block; results.json holds per kernel and
// script the counts, failing cases and wall time, plus the comparison.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/lifeline-router/lifeline/vmtest"
)

func main() {
	code, err := logic()
	if err != nil {
		fmt.Fprintln(os.Stderr, "selftest:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

// Kernel is one kernel under test.
type Kernel struct {
	Label   string `json:"label"`
	Path    string `json:"path"`
	SHA256  string `json:"sha256"`
	Release string `json:"release,omitempty"` // uname -rv in the guest
	// MPTCPSysctls lists /proc/sys/net/mptcp in the guest: the patched
	// kernel has its switch there, which tells the two apart at a glance.
	MPTCPSysctls []string `json:"mptcp_sysctls,omitempty"`
}

// Test is one selftest script with its arguments.
type Test struct {
	Script string   `json:"script"`
	Args   []string `json:"args,omitempty"`
}

func (t Test) String() string { return strings.TrimSpace(t.Script + " " + strings.Join(t.Args, " ")) }

// Run is one script on one kernel in one VM boot.
type Run struct {
	Round       int       `json:"round"`
	Kernel      string    `json:"kernel"`
	Test        Test      `json:"test"`
	Status      string    `json:"status"` // done, timeout, panic, interrupted, error
	Error       string    `json:"error,omitempty"`
	ExitCode    int       `json:"exit_code"` // the script's: 0 pass, 1 fail, 4 skip
	WallSeconds float64   `json:"wall_seconds"`
	Counts      Counts    `json:"counts"`
	Failed      []string  `json:"failed,omitempty"`
	Skipped     []string  `json:"skipped,omitempty"`
	Subtests    []Subtest `json:"subtests"`
	Log         string    `json:"log"`
}

// Results is results.json.
type Results struct {
	Started     time.Time    `json:"started"`
	Finished    time.Time    `json:"finished"`
	Accel       string       `json:"accel"`
	Baseline    string       `json:"baseline"`
	Kernels     []*Kernel    `json:"kernels"`
	Tools       []string     `json:"tools"`
	Missing     []string     `json:"missing_tools,omitempty"`
	Runs        []*Run       `json:"runs"`
	Comparisons []Comparison `json:"comparisons"`
	Throughput  []FlowRate   `json:"throughput,omitempty"`
	// Spread is, per kernel, how far simult_flows.sh's total case time
	// varied between rounds (max/min - 1, percent): the noise floor that a
	// slowdown must exceed to mean anything.
	Spread  map[string]float64 `json:"simult_flows_round_spread_pct,omitempty"`
	Verdict string             `json:"verdict"`
}

// requiredTools are what the three main scripts call (mptcp_lib_check_tools
// and their bodies); optionalTools are used only by some cases or options.
// Coreutils and friends are copied too: busybox's applets differ in options
// (ps o pid,ppid, timeout, stat -c, date +%s%N) from what the scripts expect.
var (
	requiredTools = []string{"bash", "ip", "tc", "ss", "nstat", "nft", "iptables", "ip6tables", "ethtool", "ping", "sysctl", "ps",
		"timeout", "mktemp", "od", "stat", "sleep", "cat", "rm", "seq", "date", "dd", "cmp", "xargs", "tee", "sort", "ls", "mv",
		"head", "tail", "wc", "cut", "uname", "basename", "dirname", "tr", "du", "grep", "sed", "awk", "kill", "sync", "truncate", "md5sum"}
	optionalTools = []string{"tcpdump", "jq", "socat"}
)

func logic() (int, error) {
	var kernels kernelFlags
	flag.Var(&kernels, "kernel", "label=vmlinuz, repeatable; the first is the baseline (default stock=build/kernel-stock/install/vmlinuz, patched=board/amd64/vmlinuz)")
	tests := flag.String("tests", "mptcp_connect.sh simult_flows.sh mptcp_join.sh", "space-separated scripts, each optionally with comma-separated arguments: mptcp_join.sh:-f,-s")
	tree := flag.String("tree", "build/selftest/tree/net", "prepared selftest tree (prepare.sh)")
	outPath := flag.String("out", "build/selftest/results.json", "results file")
	logDir := flag.String("logs", "build/selftest/logs", "per-run guest output and serial console")
	rounds := flag.Int("rounds", 1, "run the whole list this many times (kernel order alternates per round)")
	timeout := flag.Duration("timeout", 60*time.Minute, "bound for one script's VM run, boot included")
	mem := flag.Int("m", 2048, "guest memory in MiB (the scripts' files live in tmpfs)")
	cpus := flag.Int("smp", 2, "guest CPUs")
	verbose := flag.Bool("v", false, "stream guest output to stdout")
	virtual := flag.Bool("virtual-clock", false, "run the guest on a virtual clock (qemu -icount, TCG only): guest time follows executed instructions, so host load does not change simult_flows' transfer times")
	shift := flag.Int("clock-shift", 0, "with -virtual-clock: icount shift (0 = one instruction per ns)")
	maxDelta := flag.Float64("max-throughput-delta", 2, "simult_flows: allowed slowdown of a kernel against the baseline, percent")
	reparse := flag.Bool("reparse", false, "no VM: re-read the logs of the runs in -out and redo the comparison")
	merge := flag.String("merge", "", "with -reparse: also take the runs of this results file (e.g. extra simult_flows rounds)")
	flag.Parse()
	if *reparse {
		return reanalyze(*outPath, *merge, *maxDelta)
	}

	if len(kernels) == 0 {
		kernels = kernelFlags{{Label: "stock", Path: "build/kernel-stock/install/vmlinuz"}, {Label: "patched", Path: "board/amd64/vmlinuz"}}
	}
	list, err := ParseTests(*tests)
	if err != nil {
		return 0, err
	}
	for _, k := range kernels {
		sum, err := fileSHA256(k.Path)
		if err != nil {
			return 0, fmt.Errorf("kernel %s: %w", k.Label, err)
		}
		k.SHA256 = sum
	}
	for _, t := range list {
		if _, err := os.Stat(filepath.Join(*tree, "mptcp", t.Script)); err != nil {
			return 0, fmt.Errorf("script %s: %w (run board/selftest/prepare.sh)", t.Script, err)
		}
	}
	files, err := guestFiles(*tree)
	if err != nil {
		return 0, err
	}
	tools, missing := availableTools()
	for _, m := range missing {
		for _, r := range requiredTools {
			if m == r {
				return 0, fmt.Errorf("host tool %s missing (tools/deps.sh installs it via make kernel-selftest)", m)
			}
		}
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		return 0, fmt.Errorf("MkdirAll(%s): %w", *logDir, err)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	accel, why := vmtest.Accel()
	if *virtual && accel == "tcg" {
		why += fmt.Sprintf("; virtual clock, icount shift %d", *shift)
	}
	res := &Results{Started: time.Now().UTC(), Accel: accel + " (" + why + ")", Baseline: kernels[0].Label,
		Kernels: []*Kernel(kernels), Tools: tools, Missing: missing}
	fmt.Printf("selftest: %d script(s) x %d kernel(s) x %d round(s), QEMU %s\n", len(list), len(kernels), *rounds, res.Accel)

	for round := 1; round <= *rounds; round++ {
		for _, t := range list {
			order := append([]*Kernel(nil), kernels...)
			if round%2 == 0 {
				for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
					order[i], order[j] = order[j], order[i]
				}
			}
			for _, k := range order {
				r := runOne(ctx, k, t, round, runConfig{files: files, tools: tools, logDir: *logDir,
					timeout: *timeout, mem: *mem, cpus: *cpus, verbose: *verbose, virtual: *virtual, shift: *shift})
				res.Runs = append(res.Runs, r)
				fmt.Printf("selftest: round %d %-8s %-28s %-7s exit %d  %4d pass %3d fail %3d skip %2d flaky  %6.0f s\n",
					round, k.Label, t, r.Status, r.ExitCode, r.Counts.Pass, r.Counts.Fail, r.Counts.Skip, r.Counts.Ignored, r.WallSeconds)
				if err := writeResults(*outPath, res); err != nil {
					return 0, err
				}
				if ctx.Err() != nil {
					return 0, ctx.Err()
				}
			}
		}
	}

	res.Finished = time.Now().UTC()
	code := finish(res, *maxDelta)
	if err := writeResults(*outPath, res); err != nil {
		return 0, err
	}
	PrintSummary(os.Stdout, res)
	fmt.Printf("selftest: wrote %s\n", *outPath)
	return code, nil
}

// finish compares the runs and sets the verdict; 1 means a problem.
func finish(res *Results, maxDelta float64) int {
	res.Comparisons = Compare(res.Runs, res.Baseline)
	res.Throughput = Throughput(res.Runs, res.Baseline)
	res.Spread = Spread(res.Runs)
	var problems []string
	for _, r := range res.Runs {
		if r.Status != "done" {
			problems = append(problems, fmt.Sprintf("%s %s: %s", r.Kernel, r.Test, r.Status))
		}
	}
	for _, c := range res.Comparisons {
		if len(c.Differences) > 0 {
			problems = append(problems, fmt.Sprintf("%s on %s: %d case(s) differ from %s", c.Test, c.Kernel, len(c.Differences), c.Baseline))
		}
	}
	problems = append(problems, throughputProblems(res, maxDelta)...)
	if len(problems) > 0 {
		res.Verdict = strings.Join(problems, "; ")
		return 1
	}
	res.Verdict = "same results as " + res.Baseline
	return 0
}

// reanalyze re-reads the guest logs of an earlier run (and of merge, whose
// runs are appended with their rounds renumbered after path's) and redoes
// the comparison, so the analysis can change without booting a VM.
func reanalyze(path, merge string, maxDelta float64) (int, error) {
	res, err := readResults(path)
	if err != nil {
		return 0, err
	}
	if merge != "" {
		extra, err := readResults(merge)
		if err != nil {
			return 0, err
		}
		last := 0
		for _, r := range res.Runs {
			last = max(last, r.Round)
		}
		for _, r := range extra.Runs {
			r.Round += last
			res.Runs = append(res.Runs, r)
		}
	}
	for _, r := range res.Runs {
		b, err := os.ReadFile(r.Log)
		if err != nil {
			return 0, fmt.Errorf("run %s %s round %d: %w", r.Kernel, r.Test, r.Round, err)
		}
		r.Subtests = ParseTAP(string(b))
		if r.Test.Script == "simult_flows.sh" {
			MarkSlow(r.Subtests, string(b))
		}
		r.Counts, r.Failed, r.Skipped = Tally(r.Subtests)
	}
	code := finish(res, maxDelta)
	if err := writeResults(path, res); err != nil {
		return 0, err
	}
	PrintSummary(os.Stdout, res)
	return code, nil
}

func readResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("json.Unmarshal(%s): %w", path, err)
	}
	return &res, nil
}

type runConfig struct {
	files     map[string]string
	tools     []string
	logDir    string
	timeout   time.Duration
	mem, cpus int
	verbose   bool
	virtual   bool
	shift     int
}

var (
	releaseLine = regexp.MustCompile(`(?m)^selftest-kernel: (.*)$`)
	sysctlLine  = regexp.MustCompile(`(?m)^selftest-mptcp-sysctls: (.*)$`)
)

func runOne(ctx context.Context, k *Kernel, t Test, round int, c runConfig) *Run {
	r := &Run{Round: round, Kernel: k.Label, Test: t, ExitCode: -1}
	base := fmt.Sprintf("%d-%s-%s", round, k.Label, strings.TrimSuffix(t.Script, ".sh"))
	if len(t.Args) > 0 {
		base += strings.NewReplacer("-", "", ",", "", " ", "").Replace(strings.Join(t.Args, ""))
	}
	r.Log = filepath.Join(c.logDir, base+".log")
	logf, err := os.Create(r.Log)
	if err != nil {
		r.Status, r.Error = "error", err.Error()
		return r
	}
	defer logf.Close()
	var out io.Writer = logf
	if c.verbose {
		out = io.MultiWriter(logf, os.Stdout)
	}
	args := make([]string, len(t.Args))
	for i, a := range t.Args {
		args[i] = shellQuote(a)
	}
	// The script runs under busybox sh, where vmtest defines a function per
	// tool (its applets would shadow them); bash then finds the real tools
	// in PATH. NO_COLOR keeps escape codes out of the log.
	script := fmt.Sprintf(`cd /selftest/net/mptcp || exit 2
echo "selftest-kernel: $(uname -rv)"
echo "selftest-mptcp-sysctls: $(ls /proc/sys/net/mptcp | tr '\n' ' ')"
export NO_COLOR=1
bash ./%s %s
rc=$?
echo "selftest-exit: $rc"
exit $rc
`, t.Script, strings.Join(args, " "))
	start := time.Now()
	vr, err := vmtest.Run(ctx, vmtest.Options{
		Kernel: k.Path, Files: c.files, Tools: c.tools, Script: script,
		Timeout: c.timeout, MemoryMB: c.mem, CPUs: c.cpus, Output: out,
		VirtualClock: c.virtual, VirtualClockShift: c.shift,
	})
	r.WallSeconds = time.Since(start).Seconds()
	output := ""
	if vr != nil {
		output = vr.Output
		r.ExitCode = vr.ExitCode
		os.WriteFile(filepath.Join(c.logDir, base+".console"), []byte(vr.Console), 0o644)
	}
	switch {
	case err == nil:
		r.Status = "done"
	case ctx.Err() != nil:
		r.Status, r.Error = "interrupted", ctx.Err().Error()
	case errors.Is(err, vmtest.ErrTimeout):
		r.Status, r.Error = "timeout", err.Error()
	case vmtest.IsKernelPanic(err):
		r.Status, r.Error = "panic", err.Error()
	default:
		r.Status, r.Error = "error", err.Error()
	}
	if m := releaseLine.FindStringSubmatch(output); m != nil && k.Release == "" {
		k.Release = strings.TrimSpace(m[1])
	}
	if m := sysctlLine.FindStringSubmatch(output); m != nil && k.MPTCPSysctls == nil {
		k.MPTCPSysctls = strings.Fields(m[1])
	}
	r.Subtests = ParseTAP(output)
	if t.Script == "simult_flows.sh" { // elsewhere titles and results do not pair 1:1
		MarkSlow(r.Subtests, output)
	}
	r.Counts, r.Failed, r.Skipped = Tally(r.Subtests)
	return r
}

// guestFiles maps the prepared tree to /selftest/net, and adds what the
// copied tools load at run time without ldd knowing: iptables' extensions
// (dlopen), and the files /bin/bash shebangs and getprotobyname need.
func guestFiles(tree string) (map[string]string, error) {
	files := map[string]string{}
	err := filepath.Walk(tree, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(tree, p)
		if err != nil {
			return err
		}
		files["/selftest/net/"+filepath.ToSlash(rel)] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walking %s: %w", tree, err)
	}
	ext, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/xtables/*.so")
	for _, e := range ext {
		files[e] = e
	}
	for _, f := range []string{"/etc/protocols", "/etc/services", "/etc/ethertypes"} {
		if _, err := os.Stat(f); err == nil {
			files[f] = f
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		return nil, fmt.Errorf("LookPath(bash): %w", err)
	}
	real, err := filepath.EvalSymlinks(bash)
	if err != nil {
		return nil, fmt.Errorf("EvalSymlinks(%s): %w", bash, err)
	}
	files["/bin/bash"] = real
	return files, nil
}

func availableTools() (have, missing []string) {
	for _, t := range append(append([]string(nil), requiredTools...), optionalTools...) {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
			continue
		}
		have = append(have, t)
	}
	return have, missing
}

// ParseTests parses "a.sh b.sh:-x,-y" into tests.
func ParseTests(s string) ([]Test, error) {
	var list []Test
	for _, f := range strings.Fields(s) {
		script, args, _ := strings.Cut(f, ":")
		if !strings.HasSuffix(script, ".sh") || strings.ContainsAny(script, "/") {
			return nil, fmt.Errorf("tests: %q is not a script name like mptcp_join.sh", script)
		}
		t := Test{Script: script}
		if args != "" {
			t.Args = strings.Split(args, ",")
		}
		list = append(list, t)
	}
	if len(list) == 0 {
		return nil, errors.New("tests: empty list")
	}
	return list, nil
}

type kernelFlags []*Kernel

func (k *kernelFlags) String() string {
	var s []string
	for _, x := range *k {
		s = append(s, x.Label+"="+x.Path)
	}
	return strings.Join(s, ",")
}

func (k *kernelFlags) Set(v string) error {
	label, path, ok := strings.Cut(v, "=")
	if !ok || label == "" || path == "" {
		return fmt.Errorf("want label=path, got %q", v)
	}
	for _, x := range *k {
		if x.Label == label {
			return fmt.Errorf("kernel label %q given twice", label)
		}
	}
	*k = append(*k, &Kernel{Label: label, Path: path})
	return nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeResults(path string, res *Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("json.Marshal(results): %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("MkdirAll(%s): %w", filepath.Dir(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("WriteFile(%s): %w", tmp, err)
	}
	return os.Rename(tmp, path)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
