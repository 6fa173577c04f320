package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIsTestBoot(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo string
		want            bool
		wantErr         bool
	}{
		{"normal", "17 1 254:2 / / ro,relatime - squashfs /dev/root ro\n18 17 0:5 / /dev rw - devtmpfs devtmpfs rw\n", false, false},
		{"testboot", "22 1 254:3 / / ro,relatime - squashfs /dev/vda3 ro\n18 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n", true, false},
		{"testboot over old root", "17 1 254:2 / / ro - squashfs /dev/root ro\n22 17 254:3 / / ro - squashfs /dev/vda3 ro\n", true, false},
		{"no squashfs root", "18 1 0:5 / / rw - ext4 /dev/sda1 rw\n", false, true},
		{"malformed", "22 1 254:3 / / ro - squashfs\n", false, true},
	} {
		p := filepath.Join(t.TempDir(), "mountinfo")
		os.WriteFile(p, []byte(tc.mountinfo), 0o644)
		got, _, err := isTestBoot(p)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: isTestBoot = %v, %v; want %v, err=%v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestDecider(t *testing.T) {
	var committed, rolledBack int
	mk := func(healthyAfter int) *decider {
		n := 0
		return &decider{
			health: func(context.Context) error {
				n++
				if healthyAfter >= 0 && n > healthyAfter {
					return nil
				}
				return errors.New("503")
			},
			commit:   func(context.Context) error { committed++; return nil },
			rollback: func(context.Context) error { rolledBack++; return nil },
			logf:     t.Logf,
			interval: time.Millisecond,
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mk(3).run(ctx); err != nil || committed != 1 || rolledBack != 0 {
		t.Errorf("healthy after 3 polls: err=%v committed=%d rolledBack=%d", err, committed, rolledBack)
	}
	committed = 0
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := mk(-1).run(ctx2); err != nil || committed != 0 || rolledBack != 1 {
		t.Errorf("never healthy: err=%v committed=%d rolledBack=%d", err, committed, rolledBack)
	}
	failing := mk(0)
	failing.commit = func(context.Context) error { return errors.New("401") }
	if err := failing.run(context.Background()); err == nil {
		t.Errorf("commit failure not reported")
	}
}

func TestBootMode(t *testing.T) {
	dir := t.TempDir()
	normal := filepath.Join(dir, "mountinfo")
	os.WriteFile(normal, []byte("17 1 254:2 / / ro - squashfs /dev/root ro\n"), 0o644)
	state := filepath.Join(dir, "ota", "committed-root")
	const a = "console=ttyS0 root=PARTUUID=abcd/PARTNROFF=1 ro"
	const b = "console=ttyS0 root=PARTUUID=abcd/PARTNROFF=2 ro"

	if m, _, err := bootMode(normal, a, state); err != nil || m != firstBoot {
		t.Fatalf("no state: mode %v, %v; want firstBoot", m, err)
	}
	if err := recordRoot(state, rootArg(a)); err != nil {
		t.Fatal(err)
	}
	if m, _, err := bootMode(normal, a, state); err != nil || m != committed {
		t.Errorf("same root: mode %v, %v; want committed", m, err)
	}
	if m, why, err := bootMode(normal, b, state); err != nil || m != trial || !strings.Contains(why, "PARTNROFF=2") {
		t.Errorf("other root: mode %v (%s), %v; want trial", m, why, err)
	}
	if _, _, err := bootMode(normal, "console=ttyS0", state); err == nil {
		t.Errorf("no root=: no error")
	}
	tb := filepath.Join(dir, "mountinfo-tb")
	os.WriteFile(tb, []byte("22 1 254:3 / / ro - squashfs /dev/vda3 ro\n"), 0o644)
	if m, _, err := bootMode(tb, a, state); err != nil || m != gokrazyTestBoot {
		t.Errorf("gokrazy test boot: mode %v, %v", m, err)
	}
}
