// Package amd64 is the Lifeline board kernel for x86-64 routers, packaged the
// way gokrazy expects a kernel package: vmlinuz, cmdline.txt and lib/modules
// next to this (otherwise empty) Go file. gok copies them into the image when
// the instance config names this package as its KernelPackage.
//
// It exists because gokrazy's stock kernel lacks MPTCP, CAKE, HTB, fq_codel
// and netem. build-kernel.sh (make kernel) rebuilds it from Debian's
// linux-source-6.12, x86_64_defconfig and config.fragment; the result is
// committed so CI never compiles a kernel. See README.md.
package amd64
