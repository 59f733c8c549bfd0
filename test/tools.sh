#!/usr/bin/env bash
# tools.sh installs, idempotently, the real parts the integration tests and
# the demo run against: containerd v2.4.2 + ctr + the runc shim (built from
# source, no btrfs), Debian's runc and docker-registry, versitygw (a real S3
# server) and nerdctl. Binaries go to $FLYIO_TOOLS_BIN, which is outside
# /root, /tmp, /run and /var/lib so the VM guest (which mounts tmpfs or
# scratch over those) still sees them.
#
#   test/tools.sh            install what is missing; print the bin dir
set -euo pipefail

: "${FLYIO_TOOLS_BIN:=/var/cache/flyio-image-manager/tools/bin}"
CONTAINERD_VERSION=v2.4.2
VERSITYGW_VERSION=v1.8.0
NERDCTL_VERSION=${NERDCTL_VERSION:-v2.1.6}
mkdir -p "$FLYIO_TOOLS_BIN"

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

goinstall() { # binary module@version [tags]
	local bin=$1 mod=$2 tags=${3:-}
	[[ -x $FLYIO_TOOLS_BIN/$bin ]] && return 0
	echo "tools.sh: go install $mod" >&2
	GOBIN=$FLYIO_TOOLS_BIN GOFLAGS= go install ${tags:+-tags "$tags"} "$mod" >&2
}
goinstall containerd github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION no_btrfs
goinstall ctr github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION no_btrfs
goinstall containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION no_btrfs
goinstall versitygw github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION
# nerdctl is optional: the tests say so when it is missing.
goinstall nerdctl github.com/containerd/nerdctl/v2/cmd/nerdctl@$NERDCTL_VERSION || echo "tools.sh: nerdctl could not be installed; its test will be skipped" >&2
echo "$FLYIO_TOOLS_BIN"
