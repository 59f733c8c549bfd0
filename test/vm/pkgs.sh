#!/usr/bin/env bash
# pkgs.sh prints the packages whose tests need real dm-thin: those whose
# tests (in-package or _test package) import internal/dmtest, the dm test
# helper every VM test goes through (dmtest.Require). The Makefile's
# VM_PKGS is this list, so a new VM test package is run by `make test`
# without anyone keeping a list by hand.
#
#   test/vm/pkgs.sh [PATTERN...]   (default ./...)
set -euo pipefail
dmtest=github.com/superfly/flyio-image-manager/internal/dmtest
# shellcheck disable=SC2016 # a go template, not shell
go list -f '{{$p := .ImportPath}}{{$hit := false}}{{range .TestImports}}{{if eq . "'$dmtest'"}}{{$hit = true}}{{end}}{{end}}{{range .XTestImports}}{{if eq . "'$dmtest'"}}{{$hit = true}}{{end}}{{end}}{{if $hit}}{{$p}}{{end}}' "${@:-./...}" |
	sed -n "s#^${dmtest%/internal/dmtest}#.#p"
