# flyio-image-manager
#
#   make demo    the product's main job on a real dm-thin pool (in the VM when
#                this kernel has no device-mapper), each step explained: an
#                image tarball in a local S3 server -> process-image ->
#                images -> ctr run -> delete-image refused -> gc --dry-run
#   make test    unit tests on this machine + every dm-thin, containerd and S3
#                integration test inside the VM (or natively with dm-thin)
#   make bench   benchmarks, printed as tables against their named baselines
#   make soak    the model-based stress test (test/crash TestStress) for long,
#                in the VM: FLYIO_SOAK_DURATION (default 15m), FLYIO_SOAK_OPS,
#                FLYIO_SOAK_SEED (default: from the clock; printed for replay)
#   make build   bin/flyio-image-manager
#   make install the binary, the config example and the systemd units
#                (DESTDIR, PREFIX=/usr/local, SYSTEMDUNITDIR); make uninstall
#   make unit    only the unit tests (no VM; S3 ones against a real versitygw)
#   make lint    gofmt, go vet and the layering test (docs/ARCHITECTURE.md)
#   make tools   install containerd, ctr, runc shim, versitygw... (test/tools.sh)
#   make vm      build/refresh the test VM's kernel and initramfs
#   make vm-smoke  prove the VM harness; make vm-test PKG=./dmpool RUN=TestX
#                runs packages' tests in the VM (default: every VM package)
#   make clean   remove bin/
#   make help    this list
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

# Packages whose tests need real dm-thin; they run inside the VM. Derived
# (test/vm/pkgs.sh: the packages whose tests import internal/dmtest), so a
# new VM test package needs no edit here; evaluated only when used.
VM_PKGS ?= $(shell test/vm/pkgs.sh || echo ./test/vm/pkgs.sh-failed)

include test/vm/vm.mk
-include bench/bench.mk

# Install locations. DESTDIR stages the tree (packaging, tests); PREFIX
# only moves the binary, since the daemon and systemd look for the config
# and units in fixed places.
PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
CONFDIR        ?= /etc/flyio-image-manager
SYSTEMDUNITDIR ?= /etc/systemd/system

.PHONY: all build tools unit test soak demo lint clean install uninstall help
all: build

# help prints the "make TARGET" lines of the comment at the top.
help:
	@sed -n 's/^#   \(make .*\)/  \1/p; s/^#                \(.*\)/                \1/p' $(firstword $(MAKEFILE_LIST))

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/flyio-image-manager

# config.toml is the operator's: installed (0600, it may get S3
# credentials) only when absent, and never removed. The unit's ExecStart
# is rewritten to BINDIR. systemd re-reads units only on a live host, not
# into a DESTDIR. Enabling the unit is left to the operator.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/flyio-image-manager
	install -D -m 0644 config.toml.example $(DESTDIR)$(CONFDIR)/config.toml.example
	[ -e $(DESTDIR)$(CONFDIR)/config.toml ] || install -m 0600 config.toml.example $(DESTDIR)$(CONFDIR)/config.toml
	install -d -m 0755 $(DESTDIR)$(SYSTEMDUNITDIR)/containerd.service.d
	sed 's|^ExecStart=/usr/local/bin/|ExecStart=$(BINDIR)/|' contrib/systemd/flyio-image-manager.service >$(DESTDIR)$(SYSTEMDUNITDIR)/flyio-image-manager.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/flyio-image-manager.service
	install -m 0644 contrib/systemd/containerd.service.d/flyio-image-manager.conf $(DESTDIR)$(SYSTEMDUNITDIR)/containerd.service.d/
	$(systemd-reload)

# Leaves config.toml and root_dir (the pool and its database) alone; stop
# the service first (systemctl disable --now flyio-image-manager).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/flyio-image-manager $(DESTDIR)$(CONFDIR)/config.toml.example \
		$(DESTDIR)$(SYSTEMDUNITDIR)/flyio-image-manager.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/containerd.service.d/flyio-image-manager.conf
	-rmdir $(DESTDIR)$(SYSTEMDUNITDIR)/containerd.service.d 2>/dev/null
	$(systemd-reload)

define systemd-reload
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
endef

tools:
	test/tools.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...
	$(GO) test -count=1 ./internal/layering

# Unit tests run on any machine; the S3 ones use a real versitygw, so
# FLYIO_REQUIRE_S3=1 makes a missing server a failure, not a skip.
unit: tools
	FLYIO_REQUIRE_S3=1 $(GO) test -count=1 ./...

test: lint unit build vm
	FLYIO_REQUIRE_S3=1 $(VM_GOTEST) -timeout 30m -vm-timeout 2700 $(VM_PKGS)

# soak runs only TestStress, as long as FLYIO_SOAK_DURATION or
# FLYIO_SOAK_OPS says (whichever ends first); the VM is bounded at 4 h.
# Its last lines are the figures: operations by kind, restarts, reboots,
# violations.
soak: build vm
	FLYIO_SOAK_DURATION=$${FLYIO_SOAK_DURATION:-15m} \
	FLYIO_VM_ENV="$(FLYIO_VM_ENV) FLYIO_SOAK_DURATION FLYIO_SOAK_OPS FLYIO_SOAK_SEED" \
		$(VM_GOTEST) -run '^TestStress$$' -timeout 4h -vm-timeout 14400 ./test/crash

demo: tools build vm
	test/demo.sh

clean:
	rm -rf bin
