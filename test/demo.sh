#!/usr/bin/env bash
# demo.sh (`make demo`) shows flyio-image-manager doing its job with a real
# containerd: a loopback dm-thin pool, our daemon, a private containerd that
# uses it as the "flyio" proxy snapshotter, a small image imported and run,
# then the snapshot chain and the pool usage. Everything is torn down at
# the end; nothing of the host's own containerd is touched.
#
#   test/demo.sh            build on the host, then run natively if this
#                           kernel has dm-thin, else in the test VM
#   test/demo.sh --in-vm D  (internal) the part that needs dm-thin; D holds
#                           the binaries built on the host
#
# Needs test/tools.sh to have been run (containerd, ctr, the runc shim).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=${FLYIO_TOOLS_BIN:-/var/cache/flyio-image-manager/tools/bin}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# native reports whether this kernel can do dm-thin itself (as gotest.sh).
native() {
	[[ $(id -u) == 0 ]] || return 1
	{ exec 3<>/dev/mapper/control; } 2>/dev/null || return 1
	exec 3>&-
	modprobe -q dm_thin_pool 2>/dev/null || true
	[[ -d /sys/module/dm_thin_pool ]]
}

host() {
	for t in containerd ctr containerd-shim-runc-v2; do
		[[ -x $tools/$t ]] || { echo "demo.sh: $tools/$t missing; run test/tools.sh first" >&2; exit 1; }
	done
	bins=$(mktemp -d "${TMPDIR:-/tmp}/flyio-demo-bin.XXXXXX")
	trap 'rm -rf "$bins"' EXIT
	step "Building flyio-image-manager and the demo image (on the host)"
	(cd "$repo" &&
		go build -o "$bins/flyio-image-manager" ./cmd/flyio-image-manager &&
		go build -o "$bins/rmpool" ./test/e2e/rmpool &&
		go run ./test/e2e/mkimage -o "$bins/image.tar" -ref docker.io/flyio/demo:1)
	echo "image archive: $(du -h "$bins/image.tar" | cut -f1) (busybox + 2 small layers, built in Go by test/e2e/ociarchive)"
	if native; then
		"$repo/test/demo.sh" --in-vm "$bins"
	else
		step "This kernel has no dm-thin: booting the test VM (qemu, TCG; takes a minute)"
		# From the clone, so run.sh shares it into the guest when it lives
		# under /root or /tmp, which the guest hides.
		cd "$repo"
		"$repo/test/vm/run.sh" --share "$bins" -- "$repo/test/demo.sh" --in-vm "$bins"
	fi
}

demo() {
	# Globals, not locals: the EXIT trap runs after demo returns.
	bins=$1
	fim=$bins/flyio-image-manager
	dir=$(mktemp -d /tmp/flyio-demo.XXXXXX)
	cfg=$dir/flyio.toml ctrdcfg=$dir/containerd.toml
	sock=$dir/containerd.sock
	daemon_pid= ctrd_pid=
	export PATH=$tools:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	ctr() { command ctr --address "$sock" --namespace demo "$@"; }

	cleanup() {
		set +e
		step "Tearing down: containerd, the daemon, the pool and its loop devices"
		if [[ -n $ctrd_pid ]]; then kill "$ctrd_pid"; wait "$ctrd_pid"; fi
		if [[ -n $daemon_pid ]]; then kill "$daemon_pid"; wait "$daemon_pid"; fi
		"$bins/rmpool" -config "$cfg" && echo "pool flyio-demo removed"
		rm -rf "$dir"
	}
	trap cleanup EXIT

	metrics=127.0.0.1:9150
	step "Configuring a 4GiB sparse loopback pool under $dir"
	cat >"$cfg" <<-TOML
		root_dir = "$dir/flyio"
		address = "$dir/snapshotter.sock"
		admin_address = "$dir/admin.sock"
		metrics_address = "$metrics"
		[pool]
		name = "flyio-demo"
		data_size = "4GiB"
		metadata_size = "64MiB"
		[snapshotter]
		base_size = "256MiB"
	TOML
	cat "$cfg"

	step "Creating the dm-thin pool (flyio-image-manager setup-pool)"
	"$fim" --config "$cfg" setup-pool

	step "Starting the daemon: it serves containerd's snapshots API on $dir/snapshotter.sock"
	"$fim" --config "$cfg" daemon >"$dir/daemon.log" 2>&1 &
	daemon_pid=$!
	for _ in $(seq 100); do [[ -S $dir/snapshotter.sock ]] && break; sleep 0.2; done
	[[ -S $dir/snapshotter.sock ]] || { cat "$dir/daemon.log"; exit 1; }
	echo "daemon running (pid $daemon_pid)"

	step "Starting a private containerd with flyio as a proxy snapshotter (docs/containerd.md)"
	cat >"$ctrdcfg" <<-TOML
		version = 3
		root = "$dir/containerd/root"
		state = "$dir/containerd/state"
		disabled_plugins = ["io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"]
		[grpc]
		  address = "$sock"
		[ttrpc]
		  address = "$sock.ttrpc"
		[proxy_plugins.flyio]
		  type = "snapshot"
		  address = "$dir/snapshotter.sock"
		[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
		  platform = "linux/amd64"
		  snapshotter = "flyio"
	TOML
	sed -n '/proxy_plugins/,$p' "$ctrdcfg"
	containerd --config "$ctrdcfg" >"$dir/containerd.log" 2>&1 &
	ctrd_pid=$!
	for _ in $(seq 150); do ctr version >/dev/null 2>&1 && break; sleep 0.2; done
	ctr version >/dev/null || { tail -50 "$dir/containerd.log"; exit 1; }
	echo "containerd running (pid $ctrd_pid)"

	step "Importing the image; each layer is unpacked onto its own thin snapshot"
	ctr images import --snapshotter flyio "$bins/image.tar"
	ctr images ls

	step "Running a container from it (ctr run --snapshotter flyio)"
	ctr run --rm --snapshotter flyio docker.io/flyio/demo:1 demo1 \
		/bin/sh -c 'cat /hello.txt; echo "rootfs: $(grep " / " /proc/mounts)"; df -h /'

	step "The snapshot chain: one committed snapshot per layer (containerd's view)"
	ctr snapshots --snapshotter flyio tree

	step "The same chain as thin devices (flyio-image-manager snapshots): device ids and the data each maps"
	"$fim" --config "$cfg" snapshots

	step "Pool usage (flyio-image-manager status): thin devices share the blocks of their parents"
	"$fim" --config "$cfg" status

	step "Prometheus metrics the daemon served meanwhile (metrics_address; first lines)"
	curl -fsS "http://$metrics/metrics" | grep -E '^flyio_(snapshotter_operations_total\{operation="(prepare|commit)",result="ok"\}|pool_data_(used|size)_bytes)'
}

case ${1:-} in
--in-vm) demo "${2:?usage: demo.sh --in-vm BINDIR}" ;;
"") host ;;
*) echo "usage: test/demo.sh" >&2; exit 2 ;;
esac
