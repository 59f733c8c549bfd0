# Included by the top-level Makefile. Paths are relative to the repository
# root, which is where make runs.
#
#   make vm          build/refresh the cached guest kernel + initramfs
#   make vm-smoke    prove the harness (dm-thin in the guest, exit codes, timeout)
#   make vm-test     run PKG (default VM_PKGS, else ./...) with real dm-thin in
#                    one VM boot; RUN=REGEX passes -run to the test binaries
#
# Other rules run things in the guest through $(VM_RUN) -- CMD... or
# $(VM_GOTEST) [-timeout D] [-run RE] PKG...; both call prepare.sh themselves.

VM_DIR    := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
VM_RUN    := $(VM_DIR)/run.sh
VM_GOTEST := $(VM_DIR)/gotest.sh
VM_PKGS   ?= ./...

.PHONY: vm vm-smoke vm-test
vm:
	$(VM_DIR)/prepare.sh

vm-smoke: vm
	$(VM_DIR)/smoke_test.sh

vm-test: vm
	$(VM_GOTEST) $(if $(RUN),-run '$(RUN)') $(or $(PKG),$(VM_PKGS))
