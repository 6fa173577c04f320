// Command holefit scores rules for where the peer's hole starts after a
// cut against what a logging build of patch 0003 printed (see
// 0003-hole-estimate-logging.diff): each "LLDBG close" line lists the
// closed subflow's retransmit queue (offset past snd_una : send time after
// rack.mstamp in µs : segments, R if ever retransmitted), and the next
// "LLDBG answer" line gives the hole's true start, from the peer's
// DATA_ACK. It exists so that the rule the patch uses, and the allowance
// in it, can be re-derived from the logs rather than taken on trust.
//
//	go run ./lab/testdata/holefit lab/testdata/0003-hole-estimate.log
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

type skb struct {
	off, sent int64
	retrans   bool
}

type closeLog struct {
	scenario                       string
	inflight, minRTT, rackRTT, mss int64
	skbs                           []skb
	truth                          int64
}

var (
	closeRE  = regexp.MustCompile(`LLDBG close: hole=\d+ inflight=(\d+) min_rtt=(\d+) rack_rtt=(\d+) srtt=\d+ mss=(\d+) now-m=-?\d+ skbs(.*)`)
	answerRE = regexp.MustCompile(`LLDBG answer: new_una=\+(-?\d+) `)
)

func parse(name string) ([]closeLog, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []closeLog
	var cur *closeLog
	scenario := "cut"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "# scenario: "); ok {
			scenario = strings.TrimSpace(v)
			cur = nil
			continue
		}
		if m := closeRE.FindStringSubmatch(line); m != nil {
			c := closeLog{scenario: scenario}
			for i, p := range []*int64{&c.inflight, &c.minRTT, &c.rackRTT, &c.mss} {
				if *p, err = strconv.ParseInt(m[i+1], 10, 64); err != nil {
					return nil, fmt.Errorf("%s:%d: field %d: %w", name, n, i+1, err)
				}
			}
			for _, t := range strings.Fields(m[5]) {
				a := strings.Split(t, ":")
				if len(a) != 3 {
					return nil, fmt.Errorf("%s:%d: skb %q: want offset:sent:segments", name, n, t)
				}
				off, err1 := strconv.ParseInt(a[0], 10, 64)
				sent, err2 := strconv.ParseInt(a[1], 10, 64)
				if err1 != nil || err2 != nil {
					return nil, fmt.Errorf("%s:%d: skb %q: not numbers", name, n, t)
				}
				c.skbs = append(c.skbs, skb{off, sent, strings.HasSuffix(a[2], "R")})
			}
			cur = &c
			continue
		}
		if m := answerRE.FindStringSubmatch(line); m != nil && cur != nil {
			// The kernel prints a u64 difference: a DATA_ACK behind the
			// stale snd_una wraps.
			u, err := strconv.ParseUint(m[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: new_una: %w", name, n, err)
			}
			cur.truth = int64(u)
			out = append(out, *cur)
			cur = nil
		}
	}
	return out, sc.Err()
}

// firstAfter is the patch's walk: the first never-retransmitted segment
// sent after t (µs after rack.mstamp) starts the hole.
func firstAfter(c closeLog, t int64) int64 {
	for _, s := range c.skbs {
		if !s.retrans && s.sent > t {
			return s.off
		}
	}
	return c.inflight
}

type rule struct {
	name string
	est  func(closeLog) int64
}

func rules() []rule {
	rs := []rule{{"min_rtt (stop 17)", func(c closeLog) int64 { return firstAfter(c, c.minRTT) }}}
	for _, d := range []int64{0, 250, 500, 750, 950, 976, 1100, 1250, 1500, 2000, 2500, 3000} {
		rs = append(rs, rule{fmt.Sprintf("rack_rtt-%dus", d), func(c closeLog) int64 {
			return firstAfter(c, c.rackRTT-min(d, c.rackRTT))
		}})
	}
	return rs
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: holefit LOG...")
		os.Exit(2)
	}
	var cases []closeLog
	for _, name := range os.Args[1:] {
		cs, err := parse(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "holefit:", err)
			os.Exit(1)
		}
		cases = append(cases, cs...)
	}
	var order []string
	byScenario := map[string][]closeLog{}
	for _, c := range cases {
		if byScenario[c.scenario] == nil {
			order = append(order, c.scenario)
		}
		byScenario[c.scenario] = append(byScenario[c.scenario], c)
	}
	for _, sc := range order {
		score(sc, byScenario[sc])
	}
}

// score prints, per rule, how many closes it got exact, early (and the
// segments the peer would get twice) and late (the hole's start then
// waits for the probe's answer).
func score(scenario string, cases []closeLog) {
	fmt.Printf("%s: %d logged closes with an answer\n", scenario, len(cases))
	fmt.Println("rule                 exact early (segments) late   error per close, segments (+ late, - early)")
	for _, r := range rules() {
		var exact, early, late int
		var dup float64
		var errs []string
		for _, c := range cases {
			e := float64(r.est(c)-c.truth) / float64(c.mss)
			errs = append(errs, fmt.Sprintf("%+.0f", e))
			switch {
			case e < -0.5:
				early++
				dup -= e
			case e > 0.5:
				late++
			default:
				exact++
			}
		}
		fmt.Printf("%-20s %5d %5d (%5.1f) %4d   %s\n", r.name, exact, early, dup, late, strings.Join(errs, " "))
	}
}
