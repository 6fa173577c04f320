package supervisor

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/failover"
	"github.com/lifeline-router/lifeline/uplinks/mptcp"
)

// The fail-back flush hands what the backups' subflows still have queued
// to the primary that has just come back. While LTE carried the upload,
// its subflow filled its send buffer (hundreds of KB, failover.max_sndbuf),
// and the kernel keeps sending that on LTE after the fail-back: the
// receiver waits for it in order while the fiber's data piles up out of
// order behind it (about 0.3 s at 20 Mbit/s in the host lab). Removing
// the backup's endpoint closes its subflows, and the kernel re-injects a
// closing subflow's unacknowledged data on the others
// (__mptcp_retransmit_pending_data), here the fiber; re-adding the
// endpoint joins a fresh, idle backup subflow one LTE round trip later.
//
// Only once the primary's subflow is up, or the data would have nowhere
// to go; if it does not come up within the wait, the backlog stays. That
// wait (up to 1 s) runs in its own goroutine, which only reads the
// subflow table: the loop keeps reacting to carrier and probe events
// meanwhile (a flap during a fail-back is exactly when it must), and the
// endpoints still change only on the loop, after it has checked that the
// decision the flush was made for still holds.

// pendingFlush is a fail-back's hand-over waiting for the primary's subflow.
type pendingFlush struct {
	active  string
	backups []string
	cancel  context.CancelFunc
}

type flushOutcome int

const (
	flushReady    flushOutcome = iota // the primary's subflow is established
	flushNothing                      // no connection has a backup subflow
	flushTimedOut                     // the primary's subflow did not come up
)

// flushResult is what the wait reports back to the loop.
type flushResult struct {
	f       *pendingFlush // which flush: a superseded one's result is dropped
	outcome flushOutcome
	wait    time.Duration
	err     error
}

// startFlush begins waiting for active's subflow; a flush still pending
// from an earlier fail-back is superseded.
func (s *Supervisor) startFlush(active string, backups []string) {
	if len(backups) == 0 || s.pm == nil {
		return
	}
	s.cancelFlush()
	ctx, cancel := context.WithCancel(s.runCtx)
	f := &pendingFlush{active: active, backups: backups, cancel: cancel}
	s.flush = f
	addr := s.byName[active].tunnel.Addr()
	backupAddrs := map[netip.Addr]bool{}
	for _, name := range backups {
		backupAddrs[s.byName[name].tunnel.Addr()] = true
	}
	// The join is two round trips of the primary (MP_JOIN's SYN, then the
	// peer's ACK of the third ACK makes it fully established) plus the
	// path manager's and both tunnels' turn: 2 × SRTT + 20 ms timed out in a
	// clean-clone make test (35 ms; the join needed more on two loaded
	// cores). The wait no longer holds up the loop, so it can be generous.
	wait := min(4*s.probers[active].Snapshot().SRTT+100*time.Millisecond, time.Second)
	go func() {
		outcome, err := waitForSubflow(ctx, s.pm.Subflows, addr, backupAddrs, wait, 2*time.Millisecond)
		if ctx.Err() != nil {
			return // superseded or shutting down: nobody is waiting
		}
		select {
		case s.flushDone <- flushResult{f: f, outcome: outcome, wait: wait, err: err}:
		case <-ctx.Done():
		}
	}()
}

func (s *Supervisor) cancelFlush() {
	if s.flush != nil {
		s.flush.cancel()
		s.flush = nil
	}
}

// dropStaleFlush cancels a pending flush whose primary is no longer the
// active uplink (it went down again before its subflow came up). Every
// change of the modes is a reconcile, which ends here, so a flush still
// pending when its result arrives was made for a primary still active.
func (s *Supervisor) dropStaleFlush() {
	f := s.flush
	if f == nil {
		return
	}
	s.mu.Lock()
	m := s.modes[f.active]
	s.mu.Unlock()
	if m != failover.Active {
		s.cancelFlush()
		s.event(time.Now(), "backlog_kept", f.active, fmt.Sprintf("%s is %s again before its subflow came up", f.active, m))
	}
}

// finishFlush carries out a flush whose wait has ended.
func (s *Supervisor) finishFlush(r flushResult) {
	f := s.flush
	if f == nil || f != r.f {
		return // superseded or dropped while its result was on the way
	}
	s.flush = nil
	f.cancel()
	switch {
	case r.err != nil:
		s.fail(r.err)
		return
	case r.outcome == flushNothing:
		return
	case r.outcome == flushTimedOut:
		s.event(time.Now(), "backlog_kept", f.active, fmt.Sprintf("no established subflow from %v within %v", s.byName[f.active].tunnel.Addr(), r.wait))
		return
	}
	s.mu.Lock()
	modes := maps.Clone(s.modes)
	s.mu.Unlock()
	for _, name := range f.backups {
		if modes[name] != failover.Standby {
			continue // the policy has since changed this backup's role
		}
		p := s.byName[name]
		if _, err := s.removeEndpoints(p); err != nil {
			s.fail(err)
			return
		}
		got, err := s.ensureEndpoint(p, true)
		if err != nil {
			s.fail(err)
			return
		}
		s.event(time.Now(), "backlog_flushed", name, fmt.Sprintf("to %s; endpoint id %d %v %v", f.active, got.ID, got.Addr, got.Flags))
	}
}

// waitForSubflow polls the subflow table until a subflow from addr is
// fully established (flushReady), no subflow from a backup address is left
// to flush (flushNothing), or wait has passed (flushTimedOut).
func waitForSubflow(ctx context.Context, subflows func() ([]mptcp.Subflow, error), addr netip.Addr, backups map[netip.Addr]bool, wait, every time.Duration) (flushOutcome, error) {
	deadline := time.Now().Add(wait)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sfs, err := subflows()
		if err != nil {
			return 0, fmt.Errorf("mptcp Subflows: %w", err)
		}
		up, queued := false, false
		for _, sf := range sfs {
			up = up || (sf.Local.Addr() == addr && sf.FullyEstablished)
			queued = queued || backups[sf.Local.Addr()]
		}
		switch {
		case !queued:
			return flushNothing, nil
		case up:
			return flushReady, nil
		case !time.Now().Before(deadline):
			return flushTimedOut, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}
