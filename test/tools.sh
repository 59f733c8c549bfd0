#!/usr/bin/env bash
# tools.sh installs, idempotently, the real parts the integration tests and
# the demo run against: containerd v2.4.2 + ctr + the runc shim (built from
# source, no btrfs), Debian's runc and docker-registry, versitygw (a real S3
# server), crictl, the CNI plugins and nerdctl (built from the source
# tarball in ../shared/third_party/, which no registry here serves).
# Binaries go to $FLYIO_TOOLS_BIN, the CNI plugins to $FLYIO_CNI_BIN (cni/bin
# beside it, so their short names stay off PATH); both are outside /root,
# /tmp, /run and /var/lib so the VM guest (which mounts tmpfs or scratch over
# those) still sees them. Every tool is required: a failed build fails.
#
#   test/tools.sh            install what is missing; print the bin dir
#
# FLYIO_THIRD_PARTY overrides where the shipped sources are (default
# ../shared/third_party from the repository root).
set -euo pipefail

: "${FLYIO_TOOLS_BIN:=/var/cache/flyio-image-manager/tools/bin}"
CONTAINERD_VERSION=v2.4.2
VERSITYGW_VERSION=v1.8.0
CRICTL_VERSION=v1.37.0
CNI_PLUGINS_VERSION=v1.10.0
NERDCTL_VERSION=v2.3.5
NERDCTL_SHA256=9e029efa75c11fd7b1de35d9e211905fbab6cdb86fbe9164840d87c460e035fe
: "${FLYIO_CNI_BIN:=$(dirname "$FLYIO_TOOLS_BIN")/cni/bin}"
: "${FLYIO_THIRD_PARTY:=$(cd "$(dirname "$0")/.." && pwd)/../shared/third_party}"
mkdir -p "$FLYIO_TOOLS_BIN" "$FLYIO_CNI_BIN"

apt_missing=()
for pkg in runc docker-registry e2fsprogs xfsprogs iproute2 kmod thin-provisioning-tools curl; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || apt_missing+=("$pkg")
done
if ((${#apt_missing[@]})); then
	echo "tools.sh: apt-get install ${apt_missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >&2
fi
# The registry package starts a system service; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
	systemctl stop docker-registry || true
fi

goinstall() { # binary module@version [tags] [bindir]
	local bin=$1 mod=$2 tags=${3:-} dir=${4:-$FLYIO_TOOLS_BIN}
	[[ -x $dir/$bin ]] && return 0
	echo "tools.sh: go install $mod" >&2
	GOBIN=$dir GOFLAGS= go install ${tags:+-tags "$tags"} "$mod" >&2
}
goinstall containerd github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION no_btrfs
goinstall ctr github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION no_btrfs
goinstall containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION no_btrfs
goinstall versitygw github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION
goinstall crictl sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION
# What a bridge network needs (loopback for every pod network namespace,
# host-local for addresses, portmap for published ports).
for p in main/bridge main/loopback ipam/host-local meta/portmap; do
	goinstall "${p#*/}" "github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION" "" "$FLYIO_CNI_BIN"
done

# nerdctl: the module proxy refuses it, so it is built from the tag's tree
# we ship, after checking that the tarball is the one we vetted. Its
# dependencies come from the module proxy (-mod=mod: the tree has no vendor
# directory).
build_nerdctl() {
	local want="nerdctl version ${NERDCTL_VERSION#v}" # as it prints itself
	if [[ -x $FLYIO_TOOLS_BIN/nerdctl ]] && "$FLYIO_TOOLS_BIN/nerdctl" --version 2>/dev/null | grep -qx "$want"; then
		return 0
	fi
	local tgz=$FLYIO_THIRD_PARTY/nerdctl-$NERDCTL_VERSION.tar.gz
	[[ -r $tgz ]] || { echo "tools.sh: $tgz is missing (set FLYIO_THIRD_PARTY to the directory holding it)" >&2; return 1; }
	local got
	got=$(sha256sum "$tgz" | cut -d' ' -f1)
	if [[ $got != "$NERDCTL_SHA256" ]]; then
		echo "tools.sh: $tgz has sha256 $got, want $NERDCTL_SHA256: not building it" >&2
		return 1
	fi
	local src rc=0
	src=$(mktemp -d)
	echo "tools.sh: building nerdctl $NERDCTL_VERSION from $tgz" >&2
	(tar -xzf "$tgz" -C "$src" --strip-components=1 && cd "$src" &&
		CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build \
			-ldflags "-s -w -X github.com/containerd/nerdctl/v2/pkg/version.Version=$NERDCTL_VERSION" \
			-o "$FLYIO_TOOLS_BIN/nerdctl.new" ./cmd/nerdctl) >&2 || rc=$?
	rm -rf "$src"
	((rc == 0)) || { echo "tools.sh: building nerdctl failed" >&2; return "$rc"; }
	mv -f "$FLYIO_TOOLS_BIN/nerdctl.new" "$FLYIO_TOOLS_BIN/nerdctl"
}
build_nerdctl
echo "$FLYIO_TOOLS_BIN"
