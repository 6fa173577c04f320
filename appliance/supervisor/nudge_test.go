package supervisor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeline-router/lifeline/appliance/config"
)

func TestNudgeWanted(t *testing.T) {
	dir := t.TempDir()
	old := reinjectLimitSysctl
	t.Cleanup(func() { reinjectLimitSysctl = old })
	for _, tc := range []struct {
		mode   string
		sysctl string // "" : the kernel has no such switch
		want   bool
	}{
		{config.NudgeAuto, "", true},   // stock kernel: re-injects the whole queue
		{config.NudgeAuto, "0", true},  // patch switched off
		{config.NudgeAuto, "1", false}, // the kernel finds the hole itself
		{config.NudgeAuto, "2", false}, // and after a cut asks for it first
		{config.NudgeAuto, "3", false}, // after any close
		{config.NudgeAuto, "4", false}, // and sends the likely hole with the question
		{config.NudgeAuto, "5", true},  // a switch we do not know
		{config.NudgeOn, "1", true},
		{config.NudgeOff, "", false},
	} {
		reinjectLimitSysctl = filepath.Join(dir, "absent")
		if tc.sysctl != "" {
			reinjectLimitSysctl = filepath.Join(dir, "reinject_limit")
			if err := os.WriteFile(reinjectLimitSysctl, []byte(tc.sysctl+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s := &Supervisor{cfg: &config.Config{Failover: config.Failover{Nudge: tc.mode}}}
		if got := s.nudgeWanted(); got != tc.want {
			t.Errorf("nudge %q, reinject_limit %q: nudgeWanted() = %v, want %v", tc.mode, tc.sysctl, got, tc.want)
		}
	}
}
