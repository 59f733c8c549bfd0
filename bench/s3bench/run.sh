#!/usr/bin/env bash
# run.sh builds bench/s3bench on the host and runs it where dm-thin is
# real: natively when this kernel has the thin-pool target, otherwise in
# one boot of the test VM (test/vm/run.sh). Arguments go to s3bench, e.g.
# bench/s3bench/run.sh -size 268435456 -n 5. The report (Markdown) is
# printed again at the end, clear of the guest's console output.
#
#   S3BENCH_VM_TIMEOUT   whole-VM limit in seconds (default 2400)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools=${FLYIO_TOOLS_BIN:-/var/cache/flyio-image-manager/tools/bin}
[[ -x $tools/versitygw ]] || { echo "s3bench/run.sh: no $tools/versitygw (run test/tools.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/flyio-s3bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$repo" && go build -o "$work/s3bench" ./bench/s3bench)

native() {
	[[ $(id -u) == 0 ]] || return 1
	{ exec 3<>/dev/mapper/control; } 2>/dev/null || return 1
	exec 3>&-
	modprobe -q dm_thin_pool 2>/dev/null || true
	[[ -d /sys/module/dm_thin_pool ]]
}

status=0
if native; then
	echo "s3bench/run.sh: this kernel has dm-thin; running natively" >&2
	"$work/s3bench" -versitygw "$tools/versitygw" -out "$work/report.md" "$@" || status=$?
else
	cd "$repo"
	PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH \
		"$repo/test/vm/run.sh" --timeout "${S3BENCH_VM_TIMEOUT:-2400}" --share "$work" -- \
		"$work/s3bench" -dir /var/lib/s3bench -versitygw "$tools/versitygw" -out "$work/report.md" "$@" || status=$?
fi
if [[ -s $work/report.md ]]; then
	echo
	echo "=== s3bench report"
	cat "$work/report.md"
fi
exit "$status"
