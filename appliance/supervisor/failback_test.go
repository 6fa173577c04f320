package supervisor

import (
	"slices"
	"testing"

	"github.com/lifeline-router/lifeline/uplinks/failover"
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
