package main

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
)

// Outcome of one subtest as the selftests' mptcp_lib.sh reports it in its
// closing TAP block (mptcp_lib_result_print_all_tap).
const (
	Pass    = "pass"
	Fail    = "fail"
	Skip    = "skip"
	Ignored = "ignored" // failed, but the script marks the case flaky
)

// Subtest is one "ok N - script: name # time=Xms" line.
type Subtest struct {
	Name   string `json:"name"`
	Result string `json:"result"`
	MS     int    `json:"ms"` // time since the previous result, as the script measures it
	// SlowMS is set when the case failed only because mptcp_connect's -T
	// check fired ("transfer slower than expected! runtime N ms"): the
	// longest runtime it printed. Under TCG this is a timing failure.
	SlowMS int `json:"slow_runtime_ms,omitempty"`
}

// tapLine matches the lines mptcp_lib.sh's __mptcp_lib_result_add builds:
// "<ok|not ok> <id> - <KSFT_TEST>: <name>[ # SKIP| # IGNORE Flaky] [# ]time=<n>ms".
var (
	tapLine = regexp.MustCompile(`^(ok|not ok) (\d+) - ([A-Za-z0-9_.-]+): (.*)$`)
	tapTime = regexp.MustCompile(`\s*#?\s*time=(\d+)ms$`)
)

// ParseTAP returns the subtests of a selftest script's output, in order.
// Lines that are not TAP result lines (the scripts' own progress output,
// kernel messages) are ignored, so a partial output (a timed-out run) gives
// the subtests that finished.
func ParseTAP(output string) []Subtest {
	var subs []Subtest
	sc := bufio.NewScanner(strings.NewReader(output))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		m := tapLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rest := m[4]
		st := Subtest{Result: Pass}
		if t := tapTime.FindStringSubmatchIndex(rest); t != nil {
			st.MS, _ = strconv.Atoi(rest[t[2]:t[3]])
			rest = rest[:t[0]]
		}
		switch {
		case m[1] == "not ok":
			st.Result = Fail
		case strings.Contains(rest, " # SKIP"):
			st.Result = Skip
		case strings.Contains(rest, " # IGNORE"):
			st.Result = Ignored
		}
		if i := strings.Index(rest, " # "); i >= 0 {
			rest = rest[:i]
		}
		st.Name = strings.TrimSpace(rest)
		subs = append(subs, st)
	}
	return subs
}

var (
	titleLine = regexp.MustCompile(`^(\d+) `)
	slowMsg   = regexp.MustCompile(`transfer slower than expected! runtime (\d+) ms`)
)

// MarkSlow sets SlowMS on the failed subtests for which the script's
// progress line ("NN title ... transfer slower than expected! runtime N ms")
// reports a too-slow transfer. NN is the script's case counter, which is
// also the TAP id, i.e. the subtest's position.
func MarkSlow(subs []Subtest, output string) {
	sc := bufio.NewScanner(strings.NewReader(output))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		m := titleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n < 1 || n > len(subs) || subs[n-1].Result != Fail {
			continue
		}
		for _, r := range slowMsg.FindAllStringSubmatch(line, -1) {
			if ms, _ := strconv.Atoi(r[1]); ms > subs[n-1].SlowMS {
				subs[n-1].SlowMS = ms
			}
		}
	}
}

// Counts is a pass/fail/skip/ignored tally.
type Counts struct {
	Pass    int `json:"pass"`
	Fail    int `json:"fail"`
	Skip    int `json:"skip"`
	Ignored int `json:"ignored"`
}

// Tally counts subs by result and lists the failed ones' names.
func Tally(subs []Subtest) (c Counts, failed, skipped []string) {
	for _, s := range subs {
		switch s.Result {
		case Pass:
			c.Pass++
		case Fail:
			c.Fail++
			failed = append(failed, s.Name)
		case Skip:
			c.Skip++
			skipped = append(skipped, s.Name)
		case Ignored:
			c.Ignored++
		}
	}
	return c, failed, skipped
}

// keyed names repeated subtests "name", "name (2)", ... so two runs of a
// script can be compared case by case even where the script reuses a title.
func keyed(subs []Subtest) (keys []string, byKey map[string]Subtest) {
	byKey = map[string]Subtest{}
	seen := map[string]int{}
	for _, s := range subs {
		seen[s.Name]++
		k := s.Name
		if n := seen[s.Name]; n > 1 {
			k += " (" + strconv.Itoa(n) + ")"
		}
		keys = append(keys, k)
		byKey[k] = s
	}
	return keys, byKey
}
