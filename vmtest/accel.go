package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Linux KVM ioctls (include/uapi/linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

var accelOnce struct {
	sync.Once
	accel, why string
}

// Accel returns the QEMU accelerator to use ("kvm" or "tcg") and why.
//
// /dev/kvm existing, and even KVM_CREATE_VM succeeding, is not enough: on
// this kind of nested host a real-mode probe runs fine under KVM, but a Linux
// kernel dies early with "failed to set MSR 0x10a" (-cpu host) or "KVM
// internal error" (other CPU models), and QEMU then aborts or hangs instead of
// falling back. So the probe boots the board kernel to its "no init" panic
// under KVM and trusts KVM only when that works. The verdict is cached per
// host boot (boot_id) because the probe costs up to 20 s when KVM hangs.
// LIFELINE_VM_ACCEL=kvm|tcg overrides.
func Accel() (accel, why string) {
	accelOnce.Do(func() {
		accelOnce.accel, accelOnce.why = probeAccel()
	})
	return accelOnce.accel, accelOnce.why
}

func probeAccel() (string, string) {
	if a := os.Getenv("LIFELINE_VM_ACCEL"); a != "" {
		return a, "LIFELINE_VM_ACCEL=" + a
	}
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "tcg", "open /dev/kvm: " + err.Error()
	}
	defer unix.Close(fd)
	if v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion); err != nil || v != kvmAPIVersion {
		return "tcg", fmt.Sprintf("KVM_GET_API_VERSION = %d, %v", v, err)
	}
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		return "tcg", "KVM_CREATE_VM: " + err.Error()
	}
	unix.Close(vm)

	kernel, err := DefaultKernel()
	if err != nil {
		return "tcg", "no kernel to probe KVM with: " + err.Error()
	}
	cache := kvmCachePath(kernel)
	if b, err := os.ReadFile(cache); err == nil {
		if a, why, ok := strings.Cut(strings.TrimSpace(string(b)), " "); ok {
			return a, why + " (cached in " + cache + ")"
		}
	}
	a, why := probeKVMBoot(kernel)
	if cache != "" {
		os.MkdirAll(filepath.Dir(cache), 0o755)
		os.WriteFile(cache, []byte(a+" "+why+"\n"), 0o644)
	}
	return a, why
}

func kvmCachePath(kernel string) string {
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "lifeline", "kvm-probe-"+strings.TrimSpace(string(id)))
}

// probeKVMBoot boots kernel under KVM with an init that does not exist: a
// working KVM gets to the kernel's "No working init found" panic (and exits
// through -no-reboot), a broken one aborts or stops with an internal error.
func probeKVMBoot(kernel string) (string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBinary(),
		"-accel", "kvm", "-cpu", "host", "-M", "pc", "-m", "256",
		"-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot",
		"-serial", "stdio",
		"-kernel", kernel,
		"-append", "console=ttyS0 panic=-1 rdinit=/nonexistent init=/nonexistent root=/dev/nonexistent")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	s := out.String()
	if strings.Contains(s, "Kernel panic") && !strings.Contains(s, "KVM internal error") {
		return "kvm", "a kernel boots under KVM"
	}
	last := s
	if i := strings.LastIndex(strings.TrimSpace(s), "\n"); i >= 0 {
		last = strings.TrimSpace(s[i+1:])
	}
	if ctx.Err() != nil {
		return "tcg", "KVM probe boot timed out: " + last
	}
	return "tcg", fmt.Sprintf("KVM probe boot failed (%v): %s", err, last)
}

// AccelArgs returns the QEMU arguments selecting the accelerator and a CPU
// model that works with it.
func AccelArgs() []string {
	if a, _ := Accel(); a == "kvm" {
		return []string{"-accel", "kvm", "-cpu", "host"}
	}
	// thread=multi lets -smp 2 use both host cores; "max" gives the guest
	// every feature TCG can emulate. LIFELINE_QEMU_CPU overrides the model.
	cpu := "max"
	if c := os.Getenv("LIFELINE_QEMU_CPU"); c != "" {
		cpu = c
	}
	return []string{"-accel", "tcg,thread=multi", "-cpu", cpu}
}

func qemuBinary() string {
	if q := os.Getenv("QEMU"); q != "" {
		return q
	}
	return "qemu-system-x86_64"
}
