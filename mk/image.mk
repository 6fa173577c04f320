# image.mk: board kernel, gokrazy image, qemu VM, VM test stage and OTA.
# Included by the top-level Makefile (include mk/*.mk). See board/amd64/README.md.

KERNEL_DIR     := board/amd64
GOK            := build/bin/gok
GOKRAZY_DIR    := build/gokrazy
IMAGE          := build/lifeline-amd64.img
IMAGE_TEST     := build/lifeline-amd64-test.img
# gokrazy needs boot (100 MB) + two roots (500 MB each) + /perm (>= 100 MB),
# here 1300 MiB, ~200 MB for /perm; the file is sparse, so
# only what gok writes takes space.
IMAGE_BYTES    ?= 1363148800
# Reported by the supervisor (/healthz, lifeline status) so an OTA is visible.
LIFELINE_VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
IMAGE_DEPS     := qemu-system-x86 busybox-static e2fsprogs wpasupplicant
# Go sources that end up in the image (rebuild when they change).
IMAGE_SOURCES  := $(shell find appliance cmd modem uplinks sqm board image/wpa_supplicant image/elfbundle -name '*.go' -not -name '*_test.go' 2>/dev/null) \
                  $(wildcard $(KERNEL_DIR)/vmlinuz $(KERNEL_DIR)/cmdline.txt) image/config.json image/config.test.json $(wildcard image/testdata/*) go.mod

.PHONY: kernel image image-test vm vmtest vmtest-image update image-deps bench-image

kernel: ## rebuild the board kernel into board/amd64 (long: see build-info.txt)
	$(KERNEL_DIR)/build-kernel.sh

image-deps:
	@tools/deps.sh $(IMAGE_DEPS)

$(GOK): image/tools/go.mod image/tools/go.sum
	@mkdir -p $(dir $@)
	cd image/tools && $(GO) build -o ../../$(GOK) github.com/gokrazy/tools/cmd/gok

# gok_build NAME MKINSTANCE_FLAGS OUT: write a full image for instance NAME.
define gok_build
	@mkdir -p build
	$(GO) run ./image/mkinstance -name $(1) -version $(LIFELINE_VERSION) $(2) >/dev/null
	cd $(GOKRAZY_DIR)/$(1) && GOFLAGS= ../../../$(GOK) --parent_dir .. -i $(1) overwrite \
		--full ../../../$(3).tmp --target_storage_bytes $(IMAGE_BYTES)
	$(GO) run ./image/formatperm $(3).tmp
	mv $(3).tmp $(3)
	@echo "$(3): $$(stat -c %s $(3)) bytes apparent, $$(du -k $(3) | cut -f1) KiB allocated, kernel $$(stat -c %s $(KERNEL_DIR)/vmlinuz) bytes"
endef

image: $(IMAGE) ## build the flashable gokrazy image build/lifeline-amd64.img
$(IMAGE): $(GOK) $(IMAGE_SOURCES) | image-deps
	$(call gok_build,lifeline,,$@)

image-test: $(IMAGE_TEST) ## the image plus test-only packages (modem simulator)
$(IMAGE_TEST): $(GOK) $(IMAGE_SOURCES) | image-deps
	$(call gok_build,lifeline-test,-test,$@)

vm: image-deps $(IMAGE_TEST) ## boot the test image in qemu, serial console on this terminal
	$(GO) run ./image/vm -image $(IMAGE_TEST)

# VM stage of `make test`: every test named *VM* boots the board kernel in
# qemu (TCG unless KVM really works), plus the image boot test.
VMTEST_RUN  ?= VM
VMTEST_PKGS ?= ./...
VMTEST_ENV  = LIFELINE_IMAGE=$(CURDIR)/$(IMAGE_TEST) LIFELINE_GOK=$(CURDIR)/$(GOK)
vmtest: image-deps $(GOK) $(IMAGE_TEST) ## VM-stage tests on the board kernel, image boot and OTA round trip
	$(VMTEST_ENV) $(GO) test -count=1 -timeout 20m -run '$(VMTEST_RUN)' $(VMTEST_PKGS)

vmtest-image: image-deps $(GOK) $(IMAGE_TEST) ## only the image boot and OTA tests, verbose
	$(VMTEST_ENV) $(GO) test -count=1 -v -timeout 20m -run 'TestVMImage' ./vmtest/

EXTRA_TESTS   += vmtest
EXTRA_BENCHES += bench-image

bench-image: image-deps $(IMAGE_TEST) ## boot time to "lifeline: ready" and image size
	@mkdir -p build/bench
	LIFELINE_IMAGE=$(CURDIR)/$(IMAGE_TEST) LIFELINE_BENCH_OUT=$(CURDIR)/build/bench/image.json \
		$(GO) test -count=1 -run '^$$' -bench 'BenchmarkVMImageBoot' -benchtime 1x ./vmtest/

# OTA: make update DEVICE=host:port pushes the image's root with gokrazy's A/B
# update; on the device otacommit keeps the new root once lifeline is healthy
# and otherwise switches back to the previous root (see image/README.md).
update: $(GOK) ## push a new build to a running device: make update DEVICE=host:port
	@test -n "$(DEVICE)" || { echo "usage: make update DEVICE=host:port"; exit 2; }
	$(GO) run ./image/mkinstance -name lifeline -version $(LIFELINE_VERSION) -update $(DEVICE) >/dev/null
	cd $(GOKRAZY_DIR)/lifeline && GOFLAGS= ../../../$(GOK) --parent_dir .. -i lifeline update
