package vmbench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/lifeline-router/lifeline/lab/traces"
	"github.com/lifeline-router/lifeline/sqm"
)

// SeedResult is one qdisc of the seed's exercise ("Benchmark CAKE vs FQ_CoDel on LTE: measure
// RTT during 5Mb upload"): the round trip of the probes while TCP saturates a 5 Mbit/s LTE
// upload.
type SeedResult struct {
	Qdisc     string  `json:"qdisc"`
	Setup     string  `json:"setup"`
	P50RTTMs  float64 `json:"p50_rtt_ms"`
	P95RTTMs  float64 `json:"p95_rtt_ms"`
	P99RTTMs  float64 `json:"p99_rtt_ms"`
	IdleRTTMs float64 `json:"idle_rtt_ms"`
	// UploadUsed is the share of the 5 Mbit/s the modem sent (frames).
	UploadUsed float64 `json:"upload_capacity_used"`
}

// SeedCapacity is the exercise's LTE link: 5 Mbit/s up, 20 down.
var SeedCapacity = traces.Point{Up: 5e6, Down: 20e6}

type seedVariant struct {
	name  string
	tc    [][]string // tc arguments after "tc -n <rt>", on wwan0
	auto  bool       // our autorate on the upload instead of tc
	setup string
}

func seedVariants() []seedVariant {
	r := func(mbit float64) string { return fmt.Sprintf("%.0fkbit", mbit*1000) }
	return []seedVariant{
		{name: "none", setup: "no qdisc on wwan0 (veth: noqueue), the queue builds in the modem"},
		{name: "fq_codel", tc: [][]string{{"qdisc", "replace", "dev", Uplink, "root", "fq_codel"}},
			setup: "fq_codel as wwan0's root, unshaped (the exercise taken literally)"},
		{name: "fq_codel+tbf-4.75mbit", tc: [][]string{
			{"qdisc", "replace", "dev", Uplink, "root", "handle", "1:", "tbf", "rate", r(4.75), "burst", "6000", "latency", "100ms"},
			{"qdisc", "replace", "dev", Uplink, "parent", "1:", "fq_codel"}},
			setup: "tbf at 95 % of the upload with fq_codel under it (sqm-scripts' simple.qos idea)"},
		{name: "cake-20mbit", tc: [][]string{{"qdisc", "replace", "dev", Uplink, "root", "cake", "bandwidth", r(20), "diffserv4", "ack-filter"}},
			setup: "the seed's line: cake bandwidth 20Mbit diffserv4 ack-filter"},
		{name: "cake-4.75mbit", tc: [][]string{{"qdisc", "replace", "dev", Uplink, "root", "cake", "bandwidth", r(4.75), "diffserv4", "ack-filter"}},
			setup: "cake at 95 % of the upload, diffserv4 ack-filter"},
		{name: "cake-lifeline-autorate", auto: true,
			setup: "cake diffserv4 ack-filter, rate from our controller (sqm.Service, bounds 2-80 Mbit/s, start 20)"},
	}
}

// SeedExercise runs the seed's exercise for each qdisc: dur of saturating upload each,
// the first warm of which is not counted. Its rates are low enough not to be scaled.
func (b *Bench) SeedExercise(ctx context.Context, dur, warm time.Duration) ([]SeedResult, error) {
	capa := SeedCapacity
	var out []SeedResult
	for _, v := range seedVariants() {
		res, err := b.seedOne(ctx, v, capa, dur, warm)
		if err != nil {
			return out, fmt.Errorf("seed exercise %s: %w", v.name, err)
		}
		b.o.Logf("seed exercise %s: RTT p50 %.1f p95 %.1f ms, upload %.0f %%", v.name, res.P50RTTMs, res.P95RTTMs, res.UploadUsed*100)
		out = append(out, res)
	}
	return out, nil
}

func (b *Bench) seedOne(ctx context.Context, v seedVariant, capa traces.Point, dur, warm time.Duration) (SeedResult, error) {
	res := SeedResult{Qdisc: v.name, Setup: v.setup}
	if err := b.link.Set(capa); err != nil {
		return res, err
	}
	if err := b.link.WaitDrained(10 * time.Second); err != nil {
		return res, err
	}
	for _, args := range v.tc {
		if err := sh(append([]string{"tc", "-n", b.topo.RT}, args...)...); err != nil {
			return res, err
		}
	}
	defer sh("tc", "-n", b.topo.RT, "qdisc", "del", "dev", Uplink, "root")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if v.auto {
		shaper, err := sqm.New(sqm.Options{NetNS: b.rtfd})
		if err != nil {
			return res, err
		}
		defer shaper.Close()
		svc, err := sqm.NewService(sqm.ServiceOptions{Backend: shaper, Delays: b.prober, Counters: b.counters})
		if err != nil {
			return res, err
		}
		up := Contenders(1)[3].Config.Egress
		if err := svc.Apply([]sqm.Uplink{{Name: "lte", Device: Uplink, Config: sqm.UplinkConfig{Egress: up}}}); err != nil {
			return res, err
		}
		defer svc.Close()
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() { svc.Run(ctx); close(done) }()
	}
	idleFrom := time.Now()
	time.Sleep(time.Second) // idle RTT: a second of probes before the load
	idle := b.prober.Results(idleFrom, time.Now())
	if err := b.load.Start(b.o.Flows, 0); err != nil {
		return res, err
	}
	defer b.load.Stop()
	start := time.Now()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(warm):
	}
	from, _, err := b.link.Delivered()
	if err != nil {
		return res, err
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(dur - warm):
	}
	end := time.Now()
	to, _, err := b.link.Delivered()
	if err != nil {
		return res, err
	}
	b.load.Stop()
	res.UploadUsed = math.Round(float64(to-from)*8/end.Sub(start.Add(warm)).Seconds()/float64(capa.Up)*1000) / 1000
	var rtts, idles []float64
	for _, r := range b.prober.Results(start.Add(warm), end) {
		rtts = append(rtts, ms(r.Back.Sub(r.Sent)))
	}
	for _, r := range idle {
		idles = append(idles, ms(r.Back.Sub(r.Sent)))
	}
	if len(rtts) == 0 {
		return res, fmt.Errorf("no probe answered under load (%s)", v.name)
	}
	sort.Float64s(rtts)
	sort.Float64s(idles)
	res.P50RTTMs, res.P95RTTMs, res.P99RTTMs, res.IdleRTTMs = pctl(rtts, .5), pctl(rtts, .95), pctl(rtts, .99), pctl(idles, .5)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pctl(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return math.Round(sorted[min(max(i, 0), len(sorted)-1)]*1000) / 1000
}
