#!/usr/bin/env bash
# gotest.sh runs Go test packages where device-mapper thin provisioning is
# real, with FLYIO_REQUIRE_DM=1 so dmtest.Require fails instead of skips.
#
#   test/vm/gotest.sh [-timeout D] [-run REGEX] [-skip REGEX] [-count N] [-vm-timeout SECS] PKG...
#
# Each package is compiled on the host (go test -c); the binaries then run
# with -test.v, one after another, in the package's source directory,
# inside ONE VM boot (test/vm/run.sh). On a host whose kernel already has
# dm-thin they run natively instead. -timeout is passed to each binary as
# -test.timeout; -vm-timeout bounds the whole VM (default 1800 s, or
# FLYIO_VM_TIMEOUT). Exits non-zero if any package fails to build or run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
testargs=(-test.v)
vmtimeout=${FLYIO_VM_TIMEOUT:-1800}
while (($#)); do
	case $1 in
	-timeout | --timeout) testargs+=("-test.timeout=$2"); shift 2 ;;
	-run | --run) testargs+=("-test.run=$2"); shift 2 ;;
	-skip | --skip) testargs+=("-test.skip=$2"); shift 2 ;;
	-count | --count) testargs+=("-test.count=$2"); shift 2 ;;
	-vm-timeout | --vm-timeout) vmtimeout=$2; shift 2 ;;
	--) shift; break ;;
	-*) echo "gotest.sh: unknown option $1" >&2; exit 2 ;;
	*) break ;;
	esac
done
(($#)) || { echo "usage: gotest.sh [-timeout D] [-run REGEX] [-vm-timeout SECS] PKG..." >&2; exit 2; }

# native reports whether this kernel can already do dm-thin, in which
# case a VM would only slow things down.
native() {
	[[ $(id -u) == 0 ]] || return 1
	{ exec 3<>/dev/mapper/control; } 2>/dev/null || return 1
	exec 3>&-
	modprobe -q dm_thin_pool 2>/dev/null || true
	if command -v dmsetup >/dev/null; then
		dmsetup targets 2>/dev/null | grep -qw thin-pool
	else
		[[ -d /sys/module/dm_thin_pool ]]
	fi
}

work=$(mktemp -d "${TMPDIR:-/tmp}/flyio-gotest.XXXXXX")
trap 'rm -rf "$work"' EXIT

q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

# The driver runs every binary even after a failure, so one run reports
# all broken packages, and exits non-zero if any failed.
driver=$work/run-all.sh
{
	echo 'failed='
	echo 'export FLYIO_REQUIRE_DM=1'
	echo 'out=$(mktemp -d)'
	printf 'summarize=%s\n' "$(q "$here/failsummary.awk")"
} >"$driver"
n=0
while read -r pkg dir; do
	bin=$work/${pkg//\//_}.test
	if ! go test -c -o "$bin" "$pkg"; then
		echo "gotest.sh: building $pkg failed" >&2
		exit 1
	fi
	[[ -x $bin ]] || { echo "gotest.sh: $pkg has no tests" >&2; continue; }
	n=$((n + 1))
	{
		echo "echo '=== package $pkg'"
		# Output is kept (tee) so the failure summary below can be
		# printed at the end; the test's status travels in a file, since
		# sh has no pipefail.
		printf '{ cd %s && %s' "$(q "$dir")" "$(q "$bin")"
		for a in "${testargs[@]}"; do printf ' %s' "$(q "$a")"; done
		echo " 2>&1; echo \$? >\"\$out/$n.rc\"; } | tee \"\$out/$n.log\""
		echo "[ \"\$(cat \"\$out/$n.rc\")\" = 0 ] || { failed=\"\$failed $pkg\"; awk -f \"\$summarize\" \"\$out/$n.log\" >>\"\$out/summary\"; }"
	} >>"$driver"
done < <(go list -f '{{.ImportPath}} {{.Dir}}' "$@")
cat >>"$driver" <<'EOF2'
if [ -n "$failed" ]; then
	# The last lines of a run are what a CI excerpt shows: repeat each
	# failed test's own messages there, above the log dumps they are
	# usually buried under.
	echo "=== failure summary"
	cat "$out/summary"
	echo "=== FAIL packages:$failed"
	exit 1
fi
echo "=== all packages passed"
EOF2
((n)) || { echo "gotest.sh: no test binaries to run" >&2; exit 0; }

if native; then
	echo "gotest.sh: this kernel has dm-thin; running $n package(s) natively" >&2
	exec /bin/sh "$driver"
fi
# run.sh runs from the caller's directory: when that is a clone under
# /root or /tmp, which the guest hides, run.sh shares it into the guest,
# and the package directories with it.
FLYIO_VM_ENV="${FLYIO_VM_ENV:-} FLYIO_REQUIRE_DM" FLYIO_REQUIRE_DM=1 \
	"$here/run.sh" --timeout "$vmtimeout" --share "$work" -- /bin/sh "$driver"
