#!/usr/bin/env bash
# ab.sh [-n ROUNDS] [REV] compares the extractor at REV (default: where the
# branch left main, git merge-base main HEAD) with
# the working tree's, in one run on this host: both rootfsbench binaries
# are built, then `rootfsbench child flyio` of each extracts the benchmark
# archive ROUNDS times (default 5), alternating which goes first, each
# into a fresh ext4 (as root; otherwise a fresh directory) after an
# untimed sync, as run.sh does. It prints
# one line per run: wall, user and system time, peak RSS, and the CPU the
# rest of the machine used meanwhile (compare only runs where that is low).
# Without fresh filesystems the trees stay until the end and are removed
# at exit: creating files right after a large delete costs several times
# more on this host's root (docs/benchmarks.md), so time nothing right
# after this script then.
#
#   FLYIO_BENCH_CACHE   where the tarball is cached (default /var/cache/flyio-image-manager/bench)
#   ROOTFSBENCH_DIR     scratch directory (default /var/tmp/rootfsbench)
set -euo pipefail

n=5
if [[ ${1:-} == -n ]]; then n=$2; shift 2; fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
rev=${1:-$(git -C "$repo" merge-base main HEAD)}
cache=${FLYIO_BENCH_CACHE:-/var/cache/flyio-image-manager/bench}
archive=$cache/debian-rootfs.tar.gz
"$here/rootfs.sh" "$archive"

work=$(mktemp -d "${TMPDIR:-/tmp}/flyio-rootfsab.XXXXXX")
scratch=${ROOTFSBENCH_DIR:-/var/tmp/rootfsbench}
mkdir -p "$scratch"
trees=$(mktemp -d "$scratch/ab.XXXXXX")
# Each run extracts into a fresh ext4 made like a base's, as run.sh does
# (freshfs.go says why): needs root and loop devices; otherwise into
# directories of $scratch's own filesystem.
fresh=
if [[ $(id -u) == 0 && -e /dev/loop-control ]] && command -v mkfs.ext4 >/dev/null; then fresh=1; fi
cleanup() {
	if [[ -n $fresh ]]; then
		for m in "$trees"/*/; do mountpoint -q "$m" && umount "$m"; done
	fi
	rm -rf "$work" "$trees"
}
trap cleanup EXIT
mkdir "$work/src"
git -C "$repo" archive "$rev" | tar -x -C "$work/src"
(cd "$work/src" && go build -o "$work/before" ./bench/rootfsbench)
(cd "$repo" && go build -o "$work/after" ./bench/rootfsbench)
cat "$archive" >/dev/null

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
echo "before = $rev ($(git -C "$repo" rev-parse --short "$rev")), after = working tree; $n rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
k=0
for ((i = 0; i < n; i++)); do
	order=(before after)
	((i % 2)) && order=(after before)
	for b in "${order[@]}"; do
		k=$((k + 1))
		mkdir "$trees/$k"
		if [[ -n $fresh ]]; then
			truncate -s 4G "$trees/$k.img"
			mkfs.ext4 -q -F -m 0 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$trees/$k.img"
			mount -o loop "$trees/$k.img" "$trees/$k"
		fi
		sync
		b0=$(busy)
		r=$(/usr/bin/time -f "%e %U %S %M" "$work/$b" child flyio "$archive" "$trees/$k" 2>&1 >/dev/null | tail -1)
		b1=$(busy)
		read -r wall user sys rss <<<"$r"
		other=$(awk -v t="$((b1 - b0))" -v u="$user" -v s="$sys" 'BEGIN{o=t/100-u-s; if(o<0)o=0; printf "%.2f", o}')
		printf '%-6s round %d  %6s s  user %5s s  sys %5s s  rss %6d KiB  others %5s s\n' "$b" $((i + 1)) "$wall" "$user" "$sys" "$rss" "$other"
		if [[ -n $fresh ]]; then
			umount "$trees/$k" && rmdir "$trees/$k" && rm -f "$trees/$k.img"
		fi
	done
done
