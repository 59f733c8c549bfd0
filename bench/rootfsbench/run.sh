#!/usr/bin/env bash
# run.sh makes the Debian rootfs tarball if it is not cached yet
# (rootfs.sh), builds bench/rootfsbench and runs it on this host: the
# extractor against GNU tar and containerd's pkg/archive.Apply, same archive,
# same run. Arguments go to rootfsbench, e.g. bench/rootfsbench/run.sh -n 9.
#
#   FLYIO_BENCH_CACHE   where the tarball is cached (default /var/cache/flyio-image-manager/bench)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FLYIO_BENCH_CACHE:-/var/cache/flyio-image-manager/bench}
archive=$cache/debian-rootfs.tar.gz

if [[ ! -x /usr/bin/time ]]; then
	echo "rootfsbench/run.sh: apt-get install time" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2
fi
"$here/rootfs.sh" "$archive"
work=$(mktemp -d "${TMPDIR:-/tmp}/flyio-rootfsbench.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$repo" && go build -o "$work/rootfsbench" ./bench/rootfsbench)
"$work/rootfsbench" -archive "$archive" "$@"
