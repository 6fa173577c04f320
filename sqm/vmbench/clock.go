package vmbench

import (
	"fmt"
	"os"
	"path/filepath"
)

// VirtualClockQEMU writes, into dir, a wrapper around QEMU that runs TCG with a virtual
// clock (-icount shift=<shift>,sleep=off: guest time advances with the instructions executed,
// idle time is skipped) and returns its path, to be used as vmtest's $QEMU.
//
// Why: under TCG with a real-time clock, a guest that loses its host CPU to other VMs sees
// its timers fire late and its packets wait, and that noise (tens to hundreds of ms) drowns
// the queueing delays the bench measures. With a virtual clock the guest's view of time is
// the same however busy the host is; a busy host only makes the run take longer. The price
// is a single-threaded TCG (icount does not work with thread=multi) and a slower run, so the
// bench scales its rates down. Arguments for KVM are passed through untouched.
func VirtualClockQEMU(dir string, shift int) (string, error) {
	real := os.Getenv("QEMU")
	if real == "" {
		real = "qemu-system-x86_64"
	}
	script := fmt.Sprintf(`#!/bin/bash
# Written by sqm/vmbench: TCG with a virtual clock (see VirtualClockQEMU).
a=(); tcg=
for x in "$@"; do
  case "$x" in tcg,thread=multi) x=tcg,thread=single; tcg=1 ;; tcg*) tcg=1 ;; esac
  a+=("$x")
done
if [[ -n $tcg ]]; then a+=(-icount shift=%d,sleep=off); fi
exec %q "${a[@]}"
`, shift, real)
	p := filepath.Join(dir, "qemu-virtual-clock")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("WriteFile(%s): %w", p, err)
	}
	return p, nil
}
