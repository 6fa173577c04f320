# sqm.mk: SQM (CAKE + autorate). Included by the top-level Makefile (include mk/*.mk).
# `make bench` runs bench-autorate and bench-autorate-vm. `make test` already covers ./sqm/...
# through test-unit (go test -race ./...), and the real-kernel tests (TestVMCake,
# TestVMLinkFollowsTrace) through `make vmtest`, so test-sqm is only a shortcut and not added
# to EXTRA_TESTS.

.PHONY: bench-autorate bench-autorate-vm test-sqm vmtest-sqm
EXTRA_BENCHES += bench-autorate bench-autorate-vm

# Simulated comparison (simlink, virtual time): no shaping, fixed 20 Mbit/s, cake-autorate's
# rules and ours on the same traces → build/bench/autorate.json + build/bench/autorate-*.svg.
bench-autorate: ## simulated autorate comparison with plots (no root, no VM)
	$(GO) run ./sqm/cmd/autorate-bench -out build/bench

# Real-kernel comparison: the board kernel under qemu (TCG with a virtual clock, so host load
# does not show up as latency), the traces of lab/traces, CAKE through sqm.Service, plus the
# seed's CAKE vs fq_codel exercise → build/bench/autorate-vm.json + autorate-vm-*.svg.
# Static binary: it is also the guest's program. AUTORATE_VM_FLAGS e.g. '-scale 0.5' or
# '-traces step-80-to-10 -seed-dur 0'. About 10-15 minutes.
AUTORATE_VM_FLAGS ?=
bench-autorate-vm: ## real-kernel autorate comparison in the VM (board kernel, qemu)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 nice -n 15 $(GO) build -o $(BIN)/autorate-vmbench ./sqm/cmd/autorate-vmbench
	nice -n 15 $(BIN)/autorate-vmbench -out build/bench $(AUTORATE_VM_FLAGS)

# The sqm unit tests, the Service loop (synctest, fake kernel) and the controller goals on the
# simulated link. The real-kernel CAKE tests in ./sqm skip on a kernel without sch_cake and run
# in the VM stage.
test-sqm: ## sqm tests with the race detector
	$(GO) test -race ./sqm/... ./lab/traces/...

# Only the sqm VM-stage tests: CAKE set-up/read-back/change/clean-up, and the variable LTE link
# with our controller on the real kernel.
vmtest-sqm: ## sqm tests on the board kernel under qemu
	nice -n 15 $(GO) test -count=1 -v -timeout 20m -run 'VM' ./sqm/...
