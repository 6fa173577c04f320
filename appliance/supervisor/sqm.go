package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/lifeline-router/lifeline/sqm"
	"github.com/lifeline-router/lifeline/sqm/autorate"
)

// delaySource feeds the in-tunnel probes to the SQM autorate loop: the
// concentrator is ours, so no public reflector is needed, and the probes
// run anyway for failover.
type delaySource struct{ s *Supervisor }

// DelaySamples returns round trips for both directions: the echo carries no
// timestamp of the far end, so a bloated download also reads as delay on
// the upload (sqm.DelaySource documents the trade-off).
func (d delaySource) DelaySamples(uplink string, dir sqm.Dir, after time.Time) []autorate.DelaySample {
	pr := d.s.probers[uplink]
	if pr == nil {
		return nil
	}
	rs := pr.ReceivedAfter(after)
	out := make([]autorate.DelaySample, len(rs))
	for i, r := range rs {
		out[i] = autorate.DelaySample{SentAt: r.SentAt, Delay: r.RTT, ReceivedAt: r.ReceivedAt}
	}
	return out
}

func (d delaySource) OldestPending(uplink string) time.Duration {
	pr := d.s.probers[uplink]
	if pr == nil {
		return 0
	}
	return pr.OldestPending()
}

// startSQM shapes every uplink that has an sqm section. A kernel without
// sch_cake is reported (naming the module) but does not stop the tunnels:
// failover matters more than shaping.
func (s *Supervisor) startSQM(ctx context.Context) error {
	var ups []sqm.Uplink
	for _, p := range s.plans {
		if p.u.SQM != nil {
			ups = append(ups, sqm.Uplink{Name: p.u.Name, Device: p.u.Device, Config: *p.u.SQM})
		}
	}
	if len(ups) == 0 {
		return nil
	}
	sh, err := sqm.New(sqm.Options{})
	if err != nil {
		return fmt.Errorf("sqm.New: %w", err)
	}
	svc, err := sqm.NewService(sqm.ServiceOptions{
		Backend: sh,
		Delays:  delaySource{s},
		Logf:    func(f string, a ...any) { s.log.Warn("sqm: " + fmt.Sprintf(f, a...)) },
	})
	if err != nil {
		return fmt.Errorf("sqm.NewService: %w", err)
	}
	if err := svc.Apply(ups); err != nil {
		s.log.Error("sqm", "err", err)
	}
	if err := s.Register(svc); err != nil {
		return fmt.Errorf("registering sqm metrics: %w", err)
	}
	s.AddExtra("sqm", sqmExtra{svc})
	go func() {
		if err := svc.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("sqm loop", "err", err)
		}
	}()
	return nil
}

type sqmExtra struct{ svc *sqm.Service }

func (e sqmExtra) StatusJSON() any { return e.svc.Status() }

func (e sqmExtra) StatusLines() []string {
	var ls []string
	for _, d := range e.svc.Status() {
		l := fmt.Sprintf("sqm: %s/%s %s %s rate %.1f Mbit/s achieved %.1f", d.Uplink, d.Direction, d.Controller, d.State,
			float64(d.RateBps)/1e6, d.AchievedBps/1e6)
		if d.Stats {
			l += fmt.Sprintf(" backlog %dB drops %d marks %d peak %v", d.BacklogBytes, d.Drops, d.Marks, d.PeakDelay.Round(time.Microsecond))
		}
		if d.Error != "" {
			l += " error: " + d.Error
		}
		ls = append(ls, l)
	}
	return ls
}
