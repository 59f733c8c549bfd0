#!/usr/bin/env bash
# run.sh builds bench/lazybench and the flyio-image-manager binary on the
# host and runs the benchmark where dm-thin and nbd are real: natively
# when this kernel has the thin-pool target, otherwise in one boot of the
# test VM (test/vm/run.sh). Arguments go to lazybench, e.g.
# bench/lazybench/run.sh -size 104857600 -n 5. The report (Markdown) is
# printed again at the end, clear of the guest's console output.
#
#   LAZYBENCH_VM_TIMEOUT   whole-VM limit in seconds (default 2400)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools=${FLYIO_TOOLS_BIN:-/var/cache/flyio-image-manager/tools/bin}
for t in versitygw containerd ctr containerd-shim-runc-v2; do
	[[ -x $tools/$t ]] || { echo "lazybench/run.sh: no $tools/$t (run test/tools.sh)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/flyio-lazybench.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$repo" && go build -o "$work/lazybench" ./bench/lazybench && go build -o "$work/flyio-image-manager" ./cmd/flyio-image-manager)

native() {
	[[ $(id -u) == 0 ]] || return 1
	{ exec 3<>/dev/mapper/control; } 2>/dev/null || return 1
	exec 3>&-
	modprobe -q dm_thin_pool 2>/dev/null || true
	[[ -d /sys/module/dm_thin_pool ]]
}

args=(-bin "$work/flyio-image-manager" -tools "$tools" -out "$work/report.md")
status=0
if native; then
	echo "lazybench/run.sh: this kernel has dm-thin; running natively" >&2
	"$work/lazybench" -dir /var/tmp/lazybench "${args[@]}" "$@" || status=$?
else
	cd "$repo"
	PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH \
		"$repo/test/vm/run.sh" --timeout "${LAZYBENCH_VM_TIMEOUT:-2400}" --share "$work" -- \
		"$work/lazybench" -dir /var/lib/lazybench "${args[@]}" "$@" || status=$?
fi
if [[ -s $work/report.md ]]; then
	echo
	echo "=== lazybench report"
	cat "$work/report.md"
fi
exit "$status"
