# gpuforge developer and CI entry points. `make` alone lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

GO ?= go
# go-nvml (NVML host checks) and nvcdi need cgo; silence go-nvml's header deprecation warnings.
export CGO_CFLAGS := -Wno-deprecated-declarations
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 60s
FUZZ_TARGETS := ./recipes:FuzzParse ./pipeline:FuzzPlan

# Everything the integration and end-to-end tests run for real, besides the
# daemons built from tools/. Recommends are left out: with them qemu-system-x86
# alone drags in GTK, GStreamer and Mesa (about 190 packages instead of 40).
APT_PACKAGES := runc mmdebstrap debootstrap debian-archive-keyring \
	qemu-system-x86 ovmf qemu-utils e2fsprogs dosfstools kmod gpg ca-certificates git gcc libc6-dev
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Wait for a dpkg lock held by e.g. unattended-upgrades on a fresh machine.
APT_OPTS := -qq -o DPkg::Lock::Timeout=600

# Versions of the daemons come from tools/go.mod, so bumping a require there
# (and `go mod tidy` in tools/) is all an upgrade needs.
modversion = $(shell awk -v m='$(1)' '{for (i = 1; i < NF; i++) if ($$i == m) {print $$(i+1); exit}}' tools/go.mod)
BUILDKIT_MOD := github.com/moby/buildkit
DISTRIBUTION_MOD := github.com/distribution/distribution/v3
GGCR_MOD := github.com/google/go-containerregistry
BUILDKIT_VERSION = $(call modversion,$(BUILDKIT_MOD))
DISTRIBUTION_VERSION = $(call modversion,$(DISTRIBUTION_MOD))
GGCR_VERSION = $(call modversion,$(GGCR_MOD))
# Same tags and linker variables as BuildKit's own Dockerfile (static, no cgo).
BUILDKIT_TAGS := osusergo netgo static_build seccomp
BUILDKIT_LDFLAGS = -X $(BUILDKIT_MOD)/version.Version=$(BUILDKIT_VERSION) -X $(BUILDKIT_MOD)/version.Package=$(BUILDKIT_MOD)
# distribution's release builds print the version without its leading "v".
DISTRIBUTION_LDFLAGS = -X $(DISTRIBUTION_MOD)/version.version=$(patsubst v%,%,$(DISTRIBUTION_VERSION)) -X $(DISTRIBUTION_MOD)/version.mainpkg=$(DISTRIBUTION_MOD)
# crane prints the module version with `crane version`, as its release builds do.
CRANE_LDFLAGS = -X $(GGCR_MOD)/cmd/crane/cmd.Version=$(GGCR_VERSION)
TOOLS := bin/buildkitd bin/buildctl bin/registry bin/crane

# Files `make fmt` and `make lint` look at: every Go file outside build
# outputs, caches and testdata.
GO_FILES := find . -name '*.go' -not -path './.git/*' -not -path './bin/*' \
	-not -path './.cache/*' -not -path './dist/*' -not -path './carry/*' \
	-not -path '*/testdata/*' -print0

.PHONY: help setup apt-deps tools build test unit fuzz demo gpu-test fmt lint clean

help: ## list the targets
	@echo 'usage: make <target>'
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: apt-deps tools ## install the apt packages and build the pinned daemons the tests need (idempotent)

apt-deps: ## install missing apt packages (runc, qemu, ovmf, mmdebstrap, ...); no-op when all are present
	@command -v dpkg-query >/dev/null || { echo 'make setup supports Debian and Ubuntu only (dpkg-query not found)' >&2; exit 1; }
	@missing=; \
	for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Abbrev}' "$$p" 2>/dev/null | grep -q '^ii' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo 'apt packages: all present'; exit 0; fi; \
	echo "apt packages: installing$$missing"; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get $(APT_OPTS) update || \
		echo 'apt-get update failed; installing from the package lists already here' >&2; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get $(APT_OPTS) install -y --no-install-recommends $$missing

tools: $(TOOLS) ## build bin/buildkitd, bin/buildctl, bin/registry, bin/crane from tools/ when missing or out of date

# go build leaves an up-to-date output untouched, so touch it: otherwise a
# newer tools/go.mod would send every later `make setup` back into go build.
bin/packer: tools/packer/go.mod tools/packer/go.sum ## Packer v1.9.4 with its bundled QEMU builder, for bench/ (not needed by the tests)
	@mkdir -p bin
	cd tools/packer && CGO_ENABLED=0 $(GO) build -o ../../$@ github.com/hashicorp/packer
	@touch $@

bin/buildkitd: tools/go.mod tools/go.sum
	@mkdir -p bin
	cd tools && CGO_ENABLED=0 $(GO) build -tags '$(BUILDKIT_TAGS)' -ldflags '$(BUILDKIT_LDFLAGS)' -o ../$@ $(BUILDKIT_MOD)/cmd/buildkitd
	@touch $@

bin/buildctl: tools/go.mod tools/go.sum
	@mkdir -p bin
	cd tools && CGO_ENABLED=0 $(GO) build -tags '$(BUILDKIT_TAGS)' -ldflags '$(BUILDKIT_LDFLAGS)' -o ../$@ $(BUILDKIT_MOD)/cmd/buildctl
	@touch $@

bin/registry: tools/go.mod tools/go.sum
	@mkdir -p bin
	cd tools && CGO_ENABLED=0 $(GO) build -ldflags '$(DISTRIBUTION_LDFLAGS)' -o ../$@ $(DISTRIBUTION_MOD)/cmd/registry
	@touch $@

bin/crane: tools/go.mod tools/go.sum
	@mkdir -p bin
	cd tools && CGO_ENABLED=0 $(GO) build -ldflags '$(CRANE_LDFLAGS)' -o ../$@ $(GGCR_MOD)/cmd/crane
	@touch $@

build: ## build bin/gpuforge
	@mkdir -p bin
	CGO_ENABLED=1 CGO_CFLAGS=-Wno-deprecated-declarations $(GO) build -ldflags '-X main.version=$(VERSION)' -o bin/gpuforge ./cmd/gpuforge

# The per-package timeout catches hangs; it is not a speed goal. On a fresh 2-core machine (empty test cache,
# so the Debian bootstraps come from the mirror) cmd/gpuforge's QEMU/TCG boot tests took 40 minutes once.
test: setup build lint ## everything CI runs: gofmt and vet, all tests with the real daemons, then fuzz
	GPUFORGE_REQUIRE_TOOLS=1 PATH="$(CURDIR)/bin:$$PATH" $(GO) test -count=1 -timeout 60m ./...
	$(MAKE) --no-print-directory fuzz

unit: ## go test ./... with no setup (tests needing daemons skip)
	$(GO) test ./...

fuzz: ## run each of FUZZ_TARGETS for FUZZTIME (default 60s)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		if ! $(GO) test -list "^$$name\$$" "$$pkg" | grep -qx "$$name"; then \
			echo "fuzz: no fuzz target $$name in $$pkg (FUZZ_TARGETS in the Makefile)" >&2; exit 1; \
		fi; \
		echo "== fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	done

gpu-test: build bin/nvidia-cdi-hook ## on a GPU host (root): validate an image and the host on real GPUs; reports in docs/validation/latest
	PATH="$(CURDIR)/bin:$$PATH" tools/gpu/gpu-test.sh docs/validation/latest

# The hook the CDI specs gpuforge generates call (NVIDIA's; GPU hosts may not have it).
bin/nvidia-cdi-hook:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-cdi-hook@v1.20.2

demo: setup build ## build examples/quickstart.hcl on gpuforge's own buildkitd and show the result
	bin/gpuforge check examples/
	bin/gpuforge build examples/quickstart.hcl
	bin/gpuforge builder status

fmt: ## gofmt every Go file
	@$(GO_FILES) | xargs -0 -r gofmt -w

lint: ## fail on unformatted Go files, then go vet
	@out=$$($(GO_FILES) | xargs -0 -r gofmt -l); \
	if [ -n "$$out" ]; then echo 'gofmt -l (run make fmt):' >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet ./...

clean: ## remove bin/
	rm -rf bin
