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
