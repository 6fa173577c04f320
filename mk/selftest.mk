# selftest.mk: the kernel's own MPTCP selftests (linux-source-6.12,
# tools/testing/selftests/net/mptcp) in qemu on the patched board kernel and
# on a stock kernel from the same source and config (issue 7, item 5).
# Slow under TCG, so not part of `make test` or `make bench`; see
# board/selftest/README.md for what the default runs and how long it takes.
#
#   make kernel-selftest                                  # default scripts
#   make kernel-selftest SELFTESTS='mptcp_join.sh:-f,-s'  # a subset (script:args)
#   make kernel-selftest SELFTEST_ROUNDS=3                # medians for simult_flows

STOCK_KERNEL      := build/kernel-stock/install/vmlinuz
SELFTEST_DIR      := build/selftest
SELFTESTS         ?= simult_flows.sh mptcp_connect.sh mptcp_join.sh:-f,-l,-r,-z
SELFTEST_ROUNDS   ?= 1
SELFTEST_TIMEOUT  ?= 60m
SELFTEST_FLAGS    ?=
SELFTEST_DEPS     := qemu-system-x86 busybox-static

.PHONY: kernel-stock kernel-selftest

kernel-stock: $(STOCK_KERNEL) ## stock kernel (same source and config, no patches) in build/kernel-stock

$(STOCK_KERNEL): board/selftest/build-stock.sh $(KERNEL_DIR)/build-kernel.sh $(KERNEL_DIR)/config.fragment $(wildcard $(KERNEL_DIR)/patches/*)
	board/selftest/build-stock.sh

kernel-selftest: $(STOCK_KERNEL) ## MPTCP selftests in qemu, patched vs stock: build/selftest/results.json
	@tools/deps.sh $(SELFTEST_DEPS)
	board/selftest/prepare.sh build/kernel-stock/linux-source-6.12 $(SELFTEST_DIR)
	nice -n 15 $(GO) run ./board/selftest -tests '$(SELFTESTS)' -rounds $(SELFTEST_ROUNDS) \
		-timeout $(SELFTEST_TIMEOUT) -out $(SELFTEST_DIR)/results.json -logs $(SELFTEST_DIR)/logs $(SELFTEST_FLAGS)
