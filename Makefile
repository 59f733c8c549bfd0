# flyio-image-manager
#
#   make demo    run the product end to end on a real dm-thin pool (in the VM
#                when this kernel has no device-mapper) and explain each step
#   make test    unit tests on this machine + every dm-thin, containerd and S3
#                integration test inside the VM (or natively with dm-thin)
#   make bench   benchmarks, printed as tables against their named baselines
#   make build   bin/flyio-image-manager
#
# All of them install what they need on a Debian/Ubuntu machine (as root).

GO        ?= go
BIN       := bin/flyio-image-manager
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
export FLYIO_TOOLS_BIN ?= /var/cache/flyio-image-manager/tools/bin
export PATH := $(FLYIO_TOOLS_BIN):$(PATH)
export FLYIO_BIN := $(CURDIR)/$(BIN)
# Variables the VM guest receives (test/vm/run.sh passes only these).
export FLYIO_VM_ENV := FLYIO_BIN FLYIO_TOOLS_BIN FLYIO_REQUIRE_S3

# Packages whose tests need real dm-thin; they run inside the VM.
VM_PKGS := ./dmpool ./snapshotter ./test/e2e ./test/crash ./internal/thinmeta

include test/vm/vm.mk
-include bench/bench.mk

.PHONY: all build tools unit test demo lint clean
all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/flyio-image-manager

tools:
	test/tools.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...

# Unit tests run on any machine; the S3 ones use a real versitygw, so
# FLYIO_REQUIRE_S3=1 makes a missing server a failure, not a skip.
unit: tools
	FLYIO_REQUIRE_S3=1 $(GO) test -count=1 ./...

test: lint unit build vm
	FLYIO_REQUIRE_S3=1 $(VM_GOTEST) -timeout 30m -vm-timeout 2700 $(VM_PKGS)

demo: tools build vm
	test/demo.sh

clean:
	rm -rf bin
