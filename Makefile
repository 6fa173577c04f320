# Lifeline: see README.md. Fragments in mk/ add the lab, modem, image and
# kernel targets.
SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -mod=mod
BIN := bin
# hostapd, wpasupplicant and qemu: the WiFi tests (hwsim in our kernel) run in
# the unit stage too, and skip only when a tool is really missing.
HOST_DEPS := iproute2 nftables iperf3 wireguard-tools kmod psmisc iputils-ping \
             hostapd wpasupplicant qemu-system-x86 busybox-static e2fsprogs

.PHONY: all build test test-unit vet fmt-check bench demo deps clean
all: build

deps:
	@./tools/deps.sh $(HOST_DEPS)

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [[ -n $$out ]]; then echo "gofmt needed: $$out"; exit 1; fi

# Unit tests and the network-namespace integration tests (root), with -race.
# One package at a time (-p 1): the lab's timing checks (RTT within 10 % or
# 1 ms) share two cores with whatever else runs.
test-unit: deps build
	$(GO) test -race -p 1 -timeout 30m -skip 'VM' ./...

include $(wildcard mk/*.mk)

# test: everything CI runs (README's test command).
test: fmt-check vet test-unit $(EXTRA_TESTS)

bench: deps build $(EXTRA_BENCHES)

clean:
	rm -rf bin build
