package sim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-router/lifeline/modem/at"
)

func TestAllProfilesLoad(t *testing.T) {
	files, _ := filepath.Glob("../testdata/profiles/*.json")
	if len(files) < 8 {
		t.Fatalf("only %d profiles", len(files))
	}
	for _, f := range files {
		if _, err := LoadProfile(f); err != nil {
			t.Error(err)
		}
	}
}

func TestProfileErrorsNameTheField(t *testing.T) {
	for src, want := range map[string]string{
		`{"commands":[{"cmd":""}]}`:                      "commands[0]",
		`{"commands":[{"cmd":"AT","action":"explode"}]}`: `unknown action "explode"`,
		`{"schedule":[{"at":"1s","fault":"meteor"}]}`:    `unknown fault "meteor"`,
		`{"schedule":[{"at":"soon"}]}`:                   `duration "soon"`,
		`{"nmae":"typo"}`:                                "nmae",
	} {
		_, err := ParseProfile([]byte(src))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", src, err, want)
		}
	}
}

// The data call runs the link hooks (in the lab: ip link set wwan0 up/down).
func TestLinkHooksAndPortLink(t *testing.T) {
	p, err := LoadProfile("../testdata/profiles/generic.json")
	if err != nil {
		t.Fatal(err)
	}
	var ups, downs atomic.Int32
	link := filepath.Join(t.TempDir(), "port")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Start(ctx, p, Options{PortLink: link, LinkUp: func() error { ups.Add(1); return nil }, LinkDown: func() error { downs.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(link); err != nil || target != s.Path() {
		t.Fatalf("port link %q %v, want %s", target, err, s.Path())
	}
	f, err := at.OpenTTY(link)
	if err != nil {
		t.Fatal(err)
	}
	port := at.NewPort(f, at.Options{})
	defer port.Close()
	for _, cmd := range []string{"E0", "+CGACT=1,1", "+CGACT=1,1", "+CGACT=0,1"} {
		if _, err := port.Command(ctx, cmd, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The simulator answers before it runs the action (as a modem says OK
	// before the link follows): wait for the down hook, then count.
	for deadline := time.Now().Add(5 * time.Second); downs.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if ups.Load() != 1 || downs.Load() != 1 {
		t.Fatalf("hooks up=%d down=%d, want 1 and 1 (a second activation is not a new call)", ups.Load(), downs.Load())
	}
}
