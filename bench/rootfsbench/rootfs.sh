#!/usr/bin/env bash
# rootfs.sh [OUT] makes the benchmark's Debian root filesystem tarball
# (default $FLYIO_BENCH_CACHE/debian-rootfs.tar.gz) unless it is already
# there. No image is downloaded: debootstrap (installed from Debian if
# missing) fetches bookworm's .debs from the mirror apt uses and installs a
# minbase system plus a few common packages, as a real image build would;
# apt's caches and lists are then removed, as Debian's container images do.
# The result is about 225 MB of files in 11,800 entries, 81 MB compressed
# with gzip -6. Needs root (debootstrap runs the maintainer scripts in a
# chroot).
#
#   FLYIO_BENCH_CACHE   cache directory (default /var/cache/flyio-image-manager/bench)
#   ROOTFS_MIRROR       Debian mirror (default: the first deb.debian.org-style
#                       URI in apt's sources, else http://deb.debian.org/debian)
set -euo pipefail

cache=${FLYIO_BENCH_CACHE:-/var/cache/flyio-image-manager/bench}
out=${1:-$cache/debian-rootfs.tar.gz}
suite=bookworm
packages=python3,perl,ca-certificates,curl,less,procps,iproute2,vim-tiny,openssl

if [[ -s $out ]]; then
	exit 0
fi
[[ $(id -u) == 0 ]] || { echo "rootfs.sh: needs root to debootstrap $out" >&2; exit 1; }
if ! command -v debootstrap >/dev/null && [[ ! -x /usr/sbin/debootstrap ]]; then
	echo "rootfs.sh: apt-get install debootstrap" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends debootstrap >&2
fi
mirror=${ROOTFS_MIRROR:-}
if [[ -z $mirror ]]; then
	mirror=$(grep -hoE '^(URIs:|deb) *https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
		grep -oE 'https?://[^ ]+' | head -1 || true)
	mirror=${mirror:-http://deb.debian.org/debian}
fi

mkdir -p "$(dirname "$out")"
build=$(mktemp -d "$(dirname "$out")/rootfs-build.XXXXXX")
# --one-file-system: never descend into a /proc or /sys debootstrap failed
# to unmount.
trap 'umount -R "$build/root/proc" "$build/root/sys" 2>/dev/null || true; rm -rf --one-file-system "$build"' EXIT
echo "rootfs.sh: debootstrap --variant=minbase --include=$packages $suite from $mirror (about 2 minutes)" >&2
PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH \
	debootstrap --variant=minbase --include="$packages" "$suite" "$build/root" "$mirror" >"$build/debootstrap.log" 2>&1 ||
	{ tail -20 "$build/debootstrap.log" >&2; exit 1; }
# /dev's nodes go too: container images ship an empty /dev (the runtime
# fills it), and the extractor skips device nodes by default.
rm -rf --one-file-system "$build/root"/dev/* "$build/root"/var/cache/apt/*.bin "$build/root"/var/cache/apt/archives/*.deb \
	"$build/root"/var/lib/apt/lists/* "$build/root"/var/log/*.log "$build/root"/tmp/*
tar --numeric-owner --sort=name -C "$build/root" -cf - . | gzip -6 >"$build/rootfs.tar.gz"
mv "$build/rootfs.tar.gz" "$out"
echo "rootfs.sh: wrote $out ($(du -sh --apparent-size "$out" | cut -f1) compressed)" >&2
