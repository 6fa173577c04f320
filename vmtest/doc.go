// Package vmtest boots the Lifeline board kernel (and the gokrazy image) in
// QEMU from `go test`.
//
// It exists because the host the tests run on does not have the kernel
// features Lifeline depends on (no CAKE, fq_codel, netem, u32/matchall or
// kernel WireGuard here), and because "works on my kernel" says nothing about
// the kernel we ship. Tests that need the board kernel run their own test
// binary inside a VM with [GoTest], and everything else uses [Run] to execute
// a shell script there.
//
// Results come back over a virtio console (hvc0) that carries nothing but the
// guest program's output; the serial console (ttyS0) carries the kernel log,
// which is scanned for panics so that a crash fails loudly instead of looking
// like a timeout. KVM is used when it actually works (see [Accel]); otherwise
// QEMU runs with TCG.
//
// A kernel-dependent test in any package looks like this; on the host it
// boots the VM and runs itself there, in the guest it does the work:
//
//	func TestCakeVM(t *testing.T) {
//		if !vmtest.InVM() {
//			vmtest.GoTest(t, vmtest.GoTestOptions{Tools: []string{"tc"}})
//			return
//		}
//		// root, board kernel, real tc: test CAKE here.
//	}
//
// Tests named *VM* form the VM stage (make vmtest); -short skips them.
//
// The design follows tailscale's tstest/natlab/vmtest: QEMU is just a process
// the test owns, driven through its character devices.
package vmtest
