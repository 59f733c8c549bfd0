#!/usr/bin/env bash
# run.sh builds bench/snapbench on the host and runs it where dm-thin is
# real: natively when this kernel has the thin-pool target, otherwise in
# one boot of the test VM (test/vm/run.sh). Arguments go to snapbench,
# e.g. bench/run.sh -n 9 -concurrency 32. The report (a Markdown table) is
# printed again at the end, clear of the guest's console output.
#
#   BENCH_VM_TIMEOUT   whole-VM limit in seconds (default 1200)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

# The devmapper snapshotter shells out to dmsetup; the guest sees the
# host's root, so installing it here makes it visible there too.
if ! command -v dmsetup >/dev/null && [[ ! -x /usr/sbin/dmsetup && ! -x /sbin/dmsetup ]]; then
	echo "bench/run.sh: apt-get install dmsetup" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends dmsetup >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/flyio-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$repo" && go build -o "$work/snapbench" ./bench/snapbench)

native() {
	[[ $(id -u) == 0 ]] || return 1
	{ exec 3<>/dev/mapper/control; } 2>/dev/null || return 1
	exec 3>&-
	modprobe -q dm_thin_pool 2>/dev/null || true
	dmsetup targets 2>/dev/null | grep -qw thin-pool
}

status=0
if native; then
	echo "bench/run.sh: this kernel has dm-thin; running natively" >&2
	"$work/snapbench" -out "$work/report.md" "$@" || status=$?
else
	cd "$repo"
	PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH \
		"$repo/test/vm/run.sh" --timeout "${BENCH_VM_TIMEOUT:-1200}" --share "$work" -- \
		"$work/snapbench" -dir /var/lib/snapbench -out "$work/report.md" "$@" || status=$?
fi
if [[ -s $work/report.md ]]; then
	echo
	echo "=== snapbench report"
	cat "$work/report.md"
fi
exit "$status"
