// Package autorate decides the CAKE rate of one direction of an uplink from what the router can
// measure: bytes sent (interface counters), the delay of the probes that already run inside each
// tunnel to our concentrator, and optionally the modem's own view of the link.
//
// It exists because LTE capacity moves from second to second: a fixed CAKE rate either wastes
// capacity or lets the modem's deep buffer fill, and that buffer is both latency for every flow
// and, at a failover, bytes MPTCP has to re-send. The logic is pure (no clock, no I/O): the caller
// feeds a Sample per tick and applies Rate() with sqm.Shaper.SetRate, so the same code runs in
// the simulated link of package simlink, in the VM bench and on the router.
//
// Two controllers share the Controller interface: Baseline follows cake-autorate's published
// rules and defaults (the anchor to beat), Lifeline is ours (see its doc comment).
package autorate

import (
	"fmt"
	"sort"
	"time"
)

// DelaySample is one probe result: the probe left at SentAt and took Delay (one-way, or the
// round trip when only that is known; the controllers only look at changes of it).
type DelaySample struct {
	SentAt time.Time
	Delay  time.Duration
	// ReceivedAt is when the result reached the router, on the prober's clock. sqm.Service
	// uses it as its cursor into the prober's results; Lifeline learns from it how old a
	// probe usually is when its result arrives.
	ReceivedAt time.Time
	// IssuedAt is when the probe left the router, on the clock of ReceivedAt: the instant
	// Sample.OldestPending counts from. Zero means SentAt (the upload's one-way delay, or
	// round trips). It differs for the download's one-way delay, whose SentAt is when the
	// echo left the far end: judged against ReceivedAt − SentAt, every probe still on its
	// way would look stuck by the upload's one-way delay.
	IssuedAt time.Time
}

// ModemHint is the modem's own estimate of what the link can carry now, e.g. derived from the
// reported throughput or signal (feed-forward). Zero fields are unknown.
type ModemHint struct {
	Capacity uint64  // bit/s the modem reports or we derive from its signal; 0 = unknown
	Signal   float64 // 0..1 signal quality; 0 = unknown (informational)
}

// Sample is what the caller observed since the previous Sample.
type Sample struct {
	At      time.Time
	TxBytes uint64 // cumulative bytes sent through the shaped direction (monotonic counter)
	// Delays are the probe results that arrived since the previous Sample, oldest first.
	Delays []DelaySample
	// OldestPending is the age of the oldest probe sent but not answered yet, 0 when none: a
	// probe stuck in a bloated buffer says so before it arrives.
	OldestPending time.Duration
	Hint          *ModemHint
}

// Controller turns Samples into a CAKE rate.
type Controller interface {
	Observe(Sample)
	Rate() uint64 // bit/s
}

// Bounds are the rates a controller may choose between, and where it starts.
type Bounds struct {
	Min, Base, Max uint64 // bit/s
}

// Validate names the field at fault.
func (b Bounds) Validate() error {
	switch {
	case b.Min == 0:
		return fmt.Errorf("autorate: Bounds.Min: zero rate")
	case b.Max == 0:
		return fmt.Errorf("autorate: Bounds.Max: zero rate")
	case b.Min > b.Max:
		return fmt.Errorf("autorate: Bounds.Min %d > Bounds.Max %d", b.Min, b.Max)
	case b.Base < b.Min || b.Base > b.Max:
		return fmt.Errorf("autorate: Bounds.Base %d outside [Min %d, Max %d]", b.Base, b.Min, b.Max)
	}
	return nil
}

func (b Bounds) clamp(r float64) float64 {
	return min(max(r, float64(b.Min)), float64(b.Max))
}

// Fixed never changes its rate: the seed's "cake bandwidth 20Mbit", and "no shaping" with
// Unlimited.
type Fixed uint64

// Unlimited is a Fixed rate that stands for "no shaper".
const Unlimited = Fixed(^uint64(0))

func (f Fixed) Observe(Sample) {}
func (f Fixed) Rate() uint64   { return uint64(f) }

// rateMeter turns a cumulative byte counter into bit/s over a sliding window.
type rateMeter struct {
	ts    []time.Time
	bytes []uint64
	keep  time.Duration
}

func (m *rateMeter) add(at time.Time, b uint64) {
	if n := len(m.ts); n > 0 && (b < m.bytes[n-1] || !at.After(m.ts[n-1])) {
		if b < m.bytes[n-1] { // counter reset (interface re-created): start over
			m.ts, m.bytes = m.ts[:0], m.bytes[:0]
		} else {
			return
		}
	}
	m.ts = append(m.ts, at)
	m.bytes = append(m.bytes, b)
	cut := 0
	for cut < len(m.ts)-2 && at.Sub(m.ts[cut+1]) >= m.keep {
		cut++
	}
	if cut > 0 {
		m.ts = append(m.ts[:0], m.ts[cut:]...)
		m.bytes = append(m.bytes[:0], m.bytes[cut:]...)
	}
}

// between is the average rate (bit/s) between t1 and t2, using the samples that cover them.
func (m *rateMeter) between(t1, t2 time.Time) (float64, bool) {
	n := len(m.ts)
	if n < 2 {
		return 0, false
	}
	i := 0
	for i < n-2 && !m.ts[i+1].After(t1) {
		i++
	}
	j := n - 1
	for j > i+1 && !m.ts[j-1].Before(t2) {
		j--
	}
	dt := m.ts[j].Sub(m.ts[i]).Seconds()
	if dt <= 0 {
		return 0, false
	}
	return float64(m.bytes[j]-m.bytes[i]) * 8 / dt, true
}

// at is the counter at t, interpolated linearly between the samples around it; false outside
// the samples kept.
func (m *rateMeter) at(t time.Time) (float64, bool) {
	n := len(m.ts)
	if n == 0 || t.Before(m.ts[0]) || t.After(m.ts[n-1]) {
		return 0, false
	}
	i := sort.Search(n, func(i int) bool { return !m.ts[i].Before(t) })
	if i == 0 || m.ts[i].Equal(t) {
		return float64(m.bytes[i]), true
	}
	a, b := m.ts[i-1], m.ts[i]
	f := t.Sub(a).Seconds() / b.Sub(a).Seconds()
	return float64(m.bytes[i-1]) + f*float64(m.bytes[i]-m.bytes[i-1]), true
}

// rate is the average rate (bit/s) over [t1, t2] clipped to the samples kept, the counter
// interpolated at both ends. Unlike between it does not widen the window to the samples
// around it: with 50 ms ticks, a window that starts just after a step (80→10 Mbit/s, or our
// own cut from 40 to 2) would otherwise carry a tick of the old rate into the new one (seen
// on the real kernel: a capacity of 9–10 Mbit/s estimated right after a step to 5).
func (m *rateMeter) rate(t1, t2 time.Time) (float64, bool) {
	n := len(m.ts)
	if n < 2 {
		return 0, false
	}
	if t1.Before(m.ts[0]) {
		t1 = m.ts[0]
	}
	if t2.After(m.ts[n-1]) {
		t2 = m.ts[n-1]
	}
	dt := t2.Sub(t1).Seconds()
	if dt < 0.001 {
		return 0, false
	}
	b1, ok1 := m.at(t1)
	b2, ok2 := m.at(t2)
	if !ok1 || !ok2 {
		return 0, false
	}
	return (b2 - b1) * 8 / dt, true
}
