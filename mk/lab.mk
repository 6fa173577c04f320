# lab.mk: the network-namespace fail-over lab (package lab, cmd/lifeline-lab).
# Included by the top-level Makefile. Everything here needs root.
#
#   make demo                      1.5 GB upload, fiber cut and restore, table + plot in build/demo/
#   make demo DEMO_FLAGS='--size 300MB'
#   make bench-failover            20 trials of cut, blackhole, flap -> build/bench/failover.json
#   make test-lab                  the lab's tests only (make test runs them too)

LAB      := $(BIN)/lifeline-lab
LIFELINE := $(BIN)/lifeline
DEMO_FLAGS  ?=
BENCH_FLAGS ?=

.PHONY: demo bench-failover test-lab lab-rtt

demo: deps build
	$(LAB) demo --lifeline $(LIFELINE) --out build/demo $(DEMO_FLAGS)

bench-failover: deps build
	$(LAB) bench --lifeline $(LIFELINE) --out build/bench/failover.json $(BENCH_FLAGS)

# Idle RTT of every path against its setting (10 % or 1 ms).
lab-rtt: deps build
	$(LAB) rtt

test-lab: deps
	$(GO) test -race -timeout 15m -count=1 ./lab/...

EXTRA_BENCHES += bench-failover

# The VM lab: the same world inside our board kernel under qemu (kernel
# WireGuard, netem ISP links, CAKE on the router). The guest needs static
# binaries. See lab/README.md ("The VM lab").
VMBIN        := build/vmbin
# The guest runs on a virtual clock (qemu -icount, shift 0: a 1000 MIPS
# guest), so host load makes a run slower, not noisier; with -cpu max (AVX2
# crypto) the whole world saturates at about 50 Mbit/s of guest goodput, so
# the fiber runs at 40 Mbit/s and LTE at the seed's 20 (lab/README.md).
VM_FLAGS     ?= --clock-shift 0
VM_LAB_FLAGS ?= --fiber 40mbit --lte 20mbit
# The kernel alone decides what to re-inject: the supervisor's DATA_ACK
# nudge off (--nudge on|both to compare with it). 16 MB with the fault at
# 1.5 s for 1.5 s leaves ~1.5 s of fiber after the restore for the
# fail-back figure; 80 trials take about an hour on two host cores.
REINJECTION_FLAGS ?= --nudge off --size 16MB --cut-at 1500ms --restore-after 1500ms
VM_FAILOVER_FLAGS ?= --scenario cut

.PHONY: vmbin vm-failover bench-reinjection

vmbin:
	CGO_ENABLED=0 $(GO) build -o $(VMBIN)/ ./cmd/lifeline ./cmd/lifeline-lab

vm-failover: deps image-deps build vmbin ## one failover run in the VM lab: make vm-failover VM_FAILOVER_FLAGS='--scenario blackhole'
	$(LAB) vm --bin-dir $(VMBIN) $(VM_FLAGS) -- failover $(VM_LAB_FLAGS) $(VM_FAILOVER_FLAGS)

# Stock vs patched MPTCP re-injection (net.mptcp.reinject_limit=0/4) on our
# kernel, 20 trials per arm of cut and blackhole, in one VM.
bench-reinjection: deps image-deps build vmbin ## -> build/bench/reinjection.json + reinjection.svg
	$(LAB) vm --bin-dir $(VMBIN) $(VM_FLAGS) --timeout 90m -- reinjection $(VM_LAB_FLAGS) \
		--out build/bench/reinjection.json --plot build/bench/reinjection.svg $(REINJECTION_FLAGS)

EXTRA_BENCHES += bench-reinjection
