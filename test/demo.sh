#!/usr/bin/env bash
# demo.sh (`make demo`) shows flyio-image-manager doing its main job, the
# way the predecessor's operators use it: an image tarball sits in an S3
# bucket (a local versitygw server), process-image streams it onto a thin
# device and registers it in containerd, ctr runs a container from it,
# delete-image refuses while the container uses it and gc --dry-run lists
# nothing to remove. Everything runs on a loopback dm-thin pool, with a
# private containerd that uses the daemon as the "flyio" proxy snapshotter,
# and is torn down at the end; nothing of the host's own containerd is
# touched.
#
#   test/demo.sh            build on the host, then run natively if this
#                           kernel has dm-thin, else in the test VM
#   test/demo.sh --in-vm D  (internal) the part that needs dm-thin; D holds
#                           the binaries built on the host
#
# Needs test/tools.sh to have been run (containerd, ctr, the runc shim,
# versitygw).
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
	for t in containerd ctr containerd-shim-runc-v2 versitygw; do
		[[ -x $tools/$t ]] || { echo "demo.sh: $tools/$t missing; run test/tools.sh first" >&2; exit 1; }
	done
	bins=$(mktemp -d "${TMPDIR:-/tmp}/flyio-demo-bin.XXXXXX")
	trap 'rm -rf "$bins"' EXIT
	step "Building flyio-image-manager and the demo's S3 uploader (on the host)"
	(cd "$repo" &&
		go build -o "$bins/flyio-image-manager" ./cmd/flyio-image-manager &&
		go build -o "$bins/rmpool" ./test/e2e/rmpool &&
		go build -o "$bins/demoimage" ./test/e2e/demoimage)
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
	daemon_pid= ctrd_pid= gw_pid=
	export PATH=$tools:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	ctr() { command ctr --address "$sock" --namespace demo "$@"; }
	# The daemon and the uploader find the S3 server's credentials where
	# the AWS SDK looks first (docs/s3.md).
	export AWS_ACCESS_KEY_ID=demoaccess AWS_SECRET_ACCESS_KEY=demosecret0123456789 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
	s3=http://127.0.0.1:7070 bucket=demo-images key=images/demo.tar.gz
	ref=images.flyio.local/demo:latest

	cleanup() {
		set +e
		step "Tearing down: the container, containerd, the daemon, the S3 server, the pool and its loop devices"
		if [[ -n $ctrd_pid ]]; then
			ctr task kill -s KILL demo1 >/dev/null 2>&1 && sleep 1
			ctr task rm -f demo1 >/dev/null 2>&1
			ctr container rm demo1 >/dev/null 2>&1
			kill "$ctrd_pid"; wait "$ctrd_pid"
		fi
		if [[ -n $daemon_pid ]]; then kill "$daemon_pid"; wait "$daemon_pid"; fi
		if [[ -n $gw_pid ]]; then kill "$gw_pid"; wait "$gw_pid"; fi
		"$bins/rmpool" -config "$cfg" && echo "pool flyio-demo removed"
		rm -rf "$dir"
	}
	trap cleanup EXIT

	step "Starting a local S3 server (versitygw on $s3) and putting an image tarball in it"
	mkdir -p "$dir/s3"
	versitygw --port 127.0.0.1:7070 --access "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY" \
		--region "$AWS_REGION" --quiet posix "$dir/s3" >"$dir/versitygw.log" 2>&1 &
	gw_pid=$!
	for _ in $(seq 100); do curl -s -o /dev/null "$s3/" && break; sleep 0.2; done
	"$bins/demoimage" -endpoint "$s3" -bucket "$bucket" -key "$key"

	metrics=127.0.0.1:9150
	step "Configuring a 4GiB sparse loopback pool under $dir, the bucket and a private containerd"
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
		[s3]
		bucket = "$bucket"
		endpoint = "$s3"
		path_style = true
		[containerd]
		address = "$sock"
		namespace = "demo"
	TOML
	cat "$cfg"

	step "Creating the dm-thin pool (flyio-image-manager setup-pool)"
	"$fim" --config "$cfg" setup-pool

	step "Starting the daemon: it serves containerd's snapshots API on $dir/snapshotter.sock"
	"$fim" daemon --config "$cfg" >"$dir/daemon.log" 2>&1 &
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

	step "process-image: the daemon streams s3://$bucket/$key through the validated extractor onto a new thin device"
	# script(1) gives it a terminal, so it draws its progress bar.
	script -qefc "$fim --config $cfg process-image --s3-key $key" /dev/null

	step "images: what process-image imported, with its S3 source, sizes and base device"
	"$fim" --config "$cfg" images
	echo "containerd sees it too:"
	ctr images ls -q

	step "ctr run: a container starts on a thin snapshot of the imported base (no copy, no download)"
	ctr run -d --snapshotter flyio "$ref" demo1 /bin/busybox sleep 600
	ctr task exec --exec-id hello demo1 /bin/sh -c 'echo "in the container: $(cat /etc/variant 2>/dev/null || echo demo) image, rootfs $(grep " / " /proc/mounts | cut -d" " -f1-3)"'

	step "delete-image while the container runs: refused, the container's snapshot depends on the base"
	if "$fim" --config "$cfg" delete-image --image-id demo; then
		echo "demo.sh: delete-image removed an image a running container uses" >&2
		exit 1
	fi

	step "gc --dry-run: lists leftovers it would remove; the image and the container's snapshot are in use, so not them"
	"$fim" --config "$cfg" gc --dry-run

	step "Pool usage (flyio-image-manager status): the container's device shares the base's blocks"
	"$fim" --config "$cfg" status
}

case ${1:-} in
--in-vm) demo "${2:?usage: demo.sh --in-vm BINDIR}" ;;
"") host ;;
*) echo "usage: test/demo.sh" >&2; exit 2 ;;
esac
