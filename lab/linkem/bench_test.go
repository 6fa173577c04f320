package linkem

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain doubles as the relay process for BenchmarkRelayThroughput, so
// the benchmark can read the relay's own CPU time from /proc, apart from
// the traffic generator's.
func TestMain(m *testing.M) {
	if spec := os.Getenv("LINKEM_BENCH_RELAY"); spec != "" {
		os.Exit(benchRelayChild(spec))
	}
	os.Exit(m.Run())
}

// benchRelayChild runs a relay "target rate delay" until stdin closes.
func benchRelayChild(spec string) int {
	f := strings.Fields(spec)
	target := netip.MustParseAddrPort(f[0])
	rate, _ := ParseRate(f[1])
	delay, _ := time.ParseDuration(f[2])
	p := Params{Rate: rate, Delay: delay, Buffer: 4 << 20}
	r, err := NewRelay(loopback, target, p, p, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if prof := os.Getenv("LINKEM_BENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		cancel()
	}()
	fmt.Println(r.Addr())
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s := r.Stats()
	fmt.Printf("late_mean %v late_max %v realtime %v dropped %d send_errors %d\n", s.LateMean[Up], s.LateMax[Up], s.Realtime, s.Dropped[Up], s.SendErrors[Up])
	return 0
}

// cpuTicks is a process's user+system time in clock ticks (1/100 s).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime, stime are 14, 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

// BenchmarkRelayThroughput sends b.N datagrams of 1400 B through a relay
// in its own process and reports the delivered Mbit/s, the share lost and
// the relay process's CPU use (% of one core).
func BenchmarkRelayThroughput(b *testing.B) {
	for _, tc := range []struct {
		name    string
		link    string // rate, delay
		offered float64
	}{
		{"offer250mbit/link300mbit-5ms", "300mbit 5ms", 250e6},
		{"offer250mbit/unlimited", "0 0s", 250e6},
		{"offer600mbit/unlimited", "0 0s", 600e6},
	} {
		b.Run(tc.name, func(b *testing.B) {
			target, cnt := countServer(b)
			exe, err := os.Executable()
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), "LINKEM_BENCH_RELAY="+target.String()+" "+tc.link)
			cmd.Stderr = os.Stderr
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			out := bufio.NewReader(stdout)
			line, err := out.ReadString('\n')
			if err != nil {
				b.Fatalf("relay child: %v", err)
			}
			addr := netip.MustParseAddrPort(strings.TrimSpace(line))
			r := &Relay{listenAddr: addr}
			c := dial(b, r)

			t0, err := cpuTicks(cmd.Process.Pid)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			buf := make([]byte, 1400)
			for i := 0; i < b.N; {
				due := min(int(time.Since(start).Seconds()*tc.offered/8/1400)+1, b.N)
				for ; i < due; i++ {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(200 * time.Microsecond)
			}
			// Wait for the last datagrams (delay + queue), not for lost ones.
			var last uint64
			for stable := 0; stable < 5; {
				time.Sleep(10 * time.Millisecond)
				if n := cnt.packets.Load(); n == last {
					stable++
				} else {
					last, stable = n, 0
				}
			}
			b.StopTimer()
			t1, _ := cpuTicks(cmd.Process.Pid)
			span := cnt.last().Sub(start)
			stdin.Close()
			rest, _ := out.ReadString('\n')
			_ = cmd.Wait()
			wall := time.Since(start)
			got := cnt.packets.Load()
			b.ReportMetric(float64(cnt.bytes.Load())*8/span.Seconds()/1e6, "Mbit/s")
			b.ReportMetric(100*(1-float64(got)/float64(b.N)), "lost-%")
			b.ReportMetric(float64(t1-t0)/wall.Seconds(), "relay-cpu-%")
			if b.N > 10000 {
				b.Logf("N=%d delivered %d; relay %s", b.N, got, strings.TrimSpace(rest))
			}
		})
	}
}
