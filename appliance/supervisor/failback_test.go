package supervisor

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/uplinks/failover"
	"github.com/lifeline-router/lifeline/uplinks/mptcp"
)

func TestFailingBack(t *testing.T) {
	const (
		A = failover.Active
		S = failover.Standby
		U = failover.Unused
	)
	for _, tc := range []struct {
		name      string
		prev, now map[string]failover.Mode
		active    string
		backups   []string
	}{
		{"fiber back after LTE carried", map[string]failover.Mode{"fiber": U, "lte": S}, map[string]failover.Mode{"fiber": A, "lte": S}, "fiber", []string{"lte"}},
		{"first apply: nothing carried yet", map[string]failover.Mode{}, map[string]failover.Mode{"fiber": A, "lte": S}, "fiber", nil},
		{"steady state", map[string]failover.Mode{"fiber": A, "lte": S}, map[string]failover.Mode{"fiber": A, "lte": S}, "", nil},
		{"failover, not back", map[string]failover.Mode{"fiber": A, "lte": S}, map[string]failover.Mode{"fiber": U, "lte": S}, "", nil},
		{"a second primary joins while one is active", map[string]failover.Mode{"fiber": A, "wifi": U, "lte": S}, map[string]failover.Mode{"fiber": A, "wifi": A, "lte": S}, "", nil},
		{"a backup that was unused carried nothing", map[string]failover.Mode{"fiber": U, "lte": S, "lte2": U}, map[string]failover.Mode{"fiber": A, "lte": S, "lte2": S}, "fiber", []string{"lte"}},
	} {
		active, backups := failingBack(tc.prev, tc.now)
		slices.Sort(backups)
		if active != tc.active || !slices.Equal(backups, tc.backups) {
			t.Errorf("%s: failingBack = %q, %q; want %q, %q", tc.name, active, backups, tc.active, tc.backups)
		}
	}
}

func TestWaitForSubflow(t *testing.T) {
	fiber, lte := netip.MustParseAddr("10.55.1.2"), netip.MustParseAddr("10.55.3.2")
	backups := map[netip.Addr]bool{lte: true}
	sf := func(a netip.Addr, est bool) mptcp.Subflow {
		return mptcp.Subflow{Local: netip.AddrPortFrom(a, 40000), FullyEstablished: est}
	}
	// tables returns the i-th table on the i-th poll, then the last one.
	tables := func(ts ...[]mptcp.Subflow) (func() ([]mptcp.Subflow, error), *int) {
		n := new(int)
		return func() ([]mptcp.Subflow, error) {
			i := min(*n, len(ts)-1)
			*n++
			return ts[i], nil
		}, n
	}
	for _, tc := range []struct {
		name  string
		ts    [][]mptcp.Subflow
		want  flushOutcome
		polls int // exactly, or 0: more than one
	}{
		{"fiber joins on the third poll", [][]mptcp.Subflow{{sf(lte, true)}, {sf(lte, true), sf(fiber, false)}, {sf(lte, true), sf(fiber, true)}}, flushReady, 3},
		{"no backup subflow to flush", [][]mptcp.Subflow{{sf(fiber, true)}}, flushNothing, 1},
		{"fiber never established", [][]mptcp.Subflow{{sf(lte, true), sf(fiber, false)}}, flushTimedOut, 0},
	} {
		f, n := tables(tc.ts...)
		got, err := waitForSubflow(context.Background(), f, fiber, backups, 30*time.Millisecond, time.Millisecond)
		if err != nil || got != tc.want || (tc.polls > 0 && *n != tc.polls) || (tc.polls == 0 && *n < 2) {
			t.Errorf("%s: outcome %v after %d polls, err %v; want %v after %d", tc.name, got, *n, err, tc.want, tc.polls)
		}
	}

	// A table that cannot be read is an error naming the call.
	_, err := waitForSubflow(context.Background(), func() ([]mptcp.Subflow, error) { return nil, errors.New("EPERM") }, fiber, backups, time.Second, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "mptcp Subflows") {
		t.Errorf("unreadable table: err %v", err)
	}
	// A superseded wait ends with its context, not with its deadline.
	ctx, cancel := context.WithCancel(context.Background())
	f, _ := tables([]mptcp.Subflow{sf(lte, true)})
	done := make(chan error, 1)
	go func() { _, err := waitForSubflow(ctx, f, fiber, backups, time.Hour, time.Millisecond); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: err %v, want context.Canceled", err)
	}
}
