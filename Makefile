# bitgpu — build, test and run. `make test` is what CI runs (.ci/run); `make run` shows bitgpu work.
#
# GPU tests run twice, once on each software Vulkan driver, with the Khronos validation layer on:
#   lavapipe    (Mesa, Debian mesa-vulkan-drivers): subgroup 8; int8, fp16, 8-bit storage, dot product
#   SwiftShader (from Debian's chromium-common, unpacked into .cache/): subgroup 4; no int8/fp16/8-bit storage
# so every kernel's fast path and its 32-bit fallback run on every CI run.

SHELL := /bin/bash
GO ?= go
CACHE := $(CURDIR)/.cache
LAVAPIPE_ICD := /usr/share/vulkan/icd.d/lvp_icd.x86_64.json
SWIFTSHADER_DIR := $(CACHE)/swiftshader
SWIFTSHADER_ICD := $(SWIFTSHADER_DIR)/usr/lib/chromium/vk_swiftshader_icd.json
APT_PACKAGES := mesa-vulkan-drivers vulkan-validationlayers libvulkan1 libvulkan-dev glslc spirv-tools gcc qemu-user-static
GPU_PKGS := ./gpu/... ./runtime/... ./cmd/... ./assets/...
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_FLAGS ?= -timeout 40m

.PHONY: all build deps test vet fmt-check test-lavapipe test-swiftshader test-nocgo test-arm64 shaders run bench fuzz clean

all: build

build:
	$(GO) build -buildvcs=auto -o bin/bitgpu ./cmd/bitgpu

## deps: install what a fresh Debian 12 machine lacks (only what is missing), SwiftShader, Go modules.
deps: $(SWIFTSHADER_ICD)
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

# SwiftShader ships inside chromium-common; take the package and unpack it, no install needed.
$(SWIFTSHADER_ICD):
	@mkdir -p $(SWIFTSHADER_DIR)/deb
	@command -v apt-get >/dev/null || { echo "apt-get is needed to fetch SwiftShader (chromium-common)"; exit 1; }
	cd $(SWIFTSHADER_DIR)/deb && (apt-get download chromium-common 2>/dev/null || ($(SUDO) apt-get update -qq && apt-get download chromium-common))
	dpkg -x $(SWIFTSHADER_DIR)/deb/chromium-common_*.deb $(SWIFTSHADER_DIR)
	rm -rf $(SWIFTSHADER_DIR)/deb
	@test -f $(SWIFTSHADER_ICD) || { echo "chromium-common has no vk_swiftshader_icd.json"; exit 1; }

vet:
	$(GO) vet ./...

fmt-check:
	@bad=$$(gofmt -l $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi

## test: deps, vet, gofmt, all tests on lavapipe, then the GPU tests again on SwiftShader, then the
## CPU-only build (CGO_ENABLED=0: no Vulkan backend) vetted and tested, then package cpu on arm64.
test: deps vet fmt-check test-lavapipe test-swiftshader test-nocgo test-arm64

test-lavapipe:
	VK_ICD_FILENAMES=$(LAVAPIPE_ICD) VK_DRIVER_FILES=$(LAVAPIPE_ICD) BITGPU_REQUIRE_GPU=1 BITGPU_VALIDATE=1 \
		$(GO) test $(TEST_FLAGS) ./...

test-swiftshader: $(SWIFTSHADER_ICD)
	VK_ICD_FILENAMES=$(SWIFTSHADER_ICD) VK_DRIVER_FILES=$(SWIFTSHADER_ICD) BITGPU_REQUIRE_GPU=1 BITGPU_VALIDATE=1 \
		$(GO) test $(TEST_FLAGS) $(GPU_PKGS)

test-nocgo:
	CGO_ENABLED=0 $(GO) vet ./...
	CGO_ENABLED=0 $(GO) test $(TEST_FLAGS) ./...

## test-arm64: package cpu vetted for arm64 (with and without purego), its tests cross-compiled for
## arm64 and run under qemu user emulation (qemu-user-static, installed if missing; qemu's default
## CPU has the dot product): the NEON and NEON dot-product kernels against the portable one and
## cpuref. Then the kernel tests again with the dot product hidden (GODEBUG=cpu.asimddp=off, read
## by x/sys/cpu; the Go runtime itself warns "unknown cpu feature", harmlessly): KernelAuto is then
## KernelNEON. About 50 s here; emulated timings say nothing about arm64 speed.
ARM64_TEST := $(CACHE)/cpu_arm64.test
test-arm64:
	@dpkg-query -W -f='$${Status}' qemu-user-static 2>/dev/null | grep -q "install ok installed" || { \
		echo "installing: qemu-user-static"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qemu-user-static >/dev/null; \
	}
	GOARCH=arm64 $(GO) vet ./cpu/...
	GOARCH=arm64 $(GO) vet -tags purego ./cpu/...
	@mkdir -p $(CACHE)
	GOARCH=arm64 $(GO) test -c -o $(ARM64_TEST) ./cpu/
	cd cpu && qemu-aarch64-static $(ARM64_TEST) -test.count=1 -test.timeout 20m
	cd cpu && GODEBUG=cpu.asimddp=off qemu-aarch64-static $(ARM64_TEST) -test.count=1 -test.timeout 5m \
		-test.run '^(TestKernelResolve|TestDotKernels)$$'

## shaders: recompile every GLSL variant to SPIR-V (glslc, target vulkan1.1) and validate it.
shaders:
	$(GO) run ./scripts/shaderc

## run: show bitgpu working here: the Vulkan devices, then a continuation of a fixed prompt by the
## built-in model on the default device (--device auto: the CPU backend on a machine without a GPU).
RUN_PROMPT ?= The Python interpreter
run: deps build
	./bin/bitgpu devices
	./bin/bitgpu generate -p "$(RUN_PROMPT)" -n 48 --temp 0.7 --seed 7

## fuzz: each fuzz target for FUZZTIME (GGUF reader, whole-file Open with config, tensor and
## finiteness checks and the CPU backend, safetensors header, both tokenizers); the
## seed inputs are in the test files (f.Add) and new crashers land in model/testdata/fuzz/.
FUZZTIME ?= 60s
FUZZ_TARGETS := FuzzParseGGUF FuzzOpenGGUF FuzzParseSafetensors FuzzBPERoundTrip FuzzSPMRoundTrip
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./model/ || exit 1; \
	done

## bench: kernel and end-to-end benchmarks on the default device; JSON and plots under
## bench/results/<device>-<date>/ (BENCH_E2E_FLAGS picks the e2e model and sizes).
BENCH_E2E_FLAGS ?= --preset tiny --ctx 256 --steps 8
bench: build
	@dev=$$(./bin/bitgpu devices | sed -n 's/^\* \[[0-9]*\] //p' | tr -c 'A-Za-z0-9\n' '-' | sed 's/--*/-/g; s/-$$//' | head -1); \
	out=bench/results/$$dev-$$(date -u +%Y%m%d); mkdir -p $$out; \
	./bin/bitgpu devices > $$out/device.txt; \
	./bin/bitgpu bench kernels --json $$out/kernels.json --plot $$out | tee $$out/kernels.txt; \
	./bin/bitgpu bench e2e $(BENCH_E2E_FLAGS) --json $$out/e2e.json --plot $$out | tee $$out/e2e.txt; \
	echo "results in $$out"

clean:
	rm -rf bin $(CACHE)
