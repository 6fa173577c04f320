# sqm.mk: SQM (CAKE + autorate). Included by the top-level Makefile (include mk/*.mk).
# `make bench` runs bench-autorate. `make test` already covers ./sqm/... through test-unit
# (go test -race ./...), so test-sqm is only a shortcut and not added to EXTRA_TESTS.

.PHONY: bench-autorate test-sqm
EXTRA_BENCHES += bench-autorate

# Simulated comparison (simlink, virtual time): no shaping, fixed 20 Mbit/s, cake-autorate's
# rules and ours on the same traces → build/bench/autorate.json + build/bench/autorate-*.svg.
bench-autorate: ## simulated autorate comparison with plots (no root, no VM)
	$(GO) run ./sqm/cmd/autorate-bench -out build/bench

# The sqm unit tests, the Service loop (synctest, fake kernel) and the controller goals on the
# simulated link. The real-kernel CAKE tests in ./sqm skip on a kernel without sch_cake and run
# in the VM stage.
test-sqm: ## sqm tests with the race detector
	$(GO) test -race ./sqm/...
