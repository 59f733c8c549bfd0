#!/usr/bin/env bash
# run.sh boots a throwaway qemu guest with device-mapper thin provisioning
# and runs one command in it as root.
#
#   test/vm/run.sh [--timeout SECS] [--mem MB] [--cpus N] [--disk SIZE]
#                  [--share DIR]... -- CMD [ARGS...]
#
# The guest's root is the host's root, read-only over virtio-9p, so host
# binaries (go test -c output included) run unchanged. CMD runs in the
# same working directory as on the host, with a clean environment: PATH
# and HOME=/root plus the variables named in FLYIO_VM_ENV (space
# separated). /tmp and /var/lib are on a fresh sparse ext4 scratch disk,
# /run and /root are tmpfs; --share DIR mounts a host directory read-write
# at the same path (needed for anything under /tmp, /var/lib, /run, /root).
#
# Exit status: CMD's. 124 if the guest timed out, 125 if it failed to boot
# or never reported a status. Console output streams to stdout.
#
# Defaults (env overrides in brackets): 2 vCPUs [FLYIO_VM_CPUS], 4096 MiB
# [FLYIO_VM_MEM], 40G sparse scratch [FLYIO_VM_DISK], 1800 s timeout
# [FLYIO_VM_TIMEOUT]. FLYIO_VM_VERBOSE=1 shows the kernel's boot log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout=${FLYIO_VM_TIMEOUT:-1800}
mem=${FLYIO_VM_MEM:-4096}
cpus=${FLYIO_VM_CPUS:-2}
disk=${FLYIO_VM_DISK:-40G}
shares=()

usage() { sed -n '4,5p' "$0" | sed 's/^# *//' >&2; exit 2; }
while (($#)); do
	case $1 in
	--timeout) timeout=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--disk) disk=$2; shift 2 ;;
	--share) shares+=("$(cd "$2" && pwd -P)"); shift 2 ;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) echo "run.sh: unknown option $1" >&2; usage ;;
	esac
done
(($#)) || usage
[[ $timeout =~ ^[0-9]+$ ]] || { echo "run.sh: --timeout wants seconds, got $timeout" >&2; exit 2; }

"$here/prepare.sh"
cache=${FLYIO_VM_CACHE:-/var/cache/flyio-image-manager/vm}
# shellcheck source=/dev/null
. "$cache/current.env"

cwd=$(pwd -P)
case $cwd/ in
/tmp/* | /var/lib/* | /run/* | /root/* | /proc/* | /sys/* | /dev/*)
	covered=0
	for s in "${shares[@]}"; do [[ $cwd/ == "$s"/* ]] && covered=1; done
	# A clone under /root or /tmp (where newcomers and CI put them) would
	# be hidden in the guest: share its top directory read-write instead.
	if ((!covered)); then
		top=$(git -C "$cwd" rev-parse --show-toplevel 2>/dev/null || echo "$cwd")
		shares+=("$(cd "$top" && pwd -P)")
	fi
	;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/flyio-vm.XXXXXX")
ctl=$work/ctl
mkdir "$ctl"
qpid=
cleanup() {
	[[ -n $qpid ]] && kill "$qpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# Quote for a POSIX shell: wrap in single quotes, escape embedded ones.
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

{
	echo "cd -- $(q "$cwd") || exit 125"
	echo "export PATH=$(q "$PATH") HOME=/root TERM=dumb"
	for name in ${FLYIO_VM_ENV:-}; do
		[[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "run.sh: bad name in FLYIO_VM_ENV: $name" >&2; exit 2; }
		[[ -v $name ]] && echo "export $name=$(q "${!name}")"
	done
	printf 'exec'
	for a in "$@"; do printf ' %s' "$(q "$a")"; done
	echo
} >"$ctl/job.sh"
echo "$FLYIO_VM_MODULES" >"$ctl/modules-dir"

truncate -s "$disk" "$work/scratch.img"

fsargs=()
i=0
for s in "${shares[@]}"; do
	fsargs+=(-fsdev "local,id=share$i,path=$s,security_model=passthrough,multidevs=remap"
		-device "virtio-9p-pci,fsdev=share$i,mount_tag=share$i")
	echo "share$i $s" >>"$ctl/shares"
	i=$((i + 1))
done

append="console=ttyS0 panic=-1 mitigations=off tsc=reliable no_timer_check 8250.nr_uarts=1"
[[ ${FLYIO_VM_VERBOSE:-} == 1 ]] || append+=" quiet loglevel=3"

echo "run.sh: booting $FLYIO_VM_KVER ($cpus vCPUs, $mem MiB, $disk scratch, timeout ${timeout}s): $*" >&2
start=$SECONDS
set +e
# KVM hangs a stock kernel on these hosts, so TCG it is; thread=multi
# gives each vCPU its own host thread. stdin is /dev/null so CI without a
# terminal and interactive shells behave the same.
timeout -k 10 "$timeout" qemu-system-x86_64 \
	-accel tcg,thread=multi -machine q35 -cpu max -smp "$cpus" -m "$mem" \
	-nodefaults -no-user-config -display none -monitor none -no-reboot \
	-chardev stdio,id=con0,signal=off -serial chardev:con0 \
	-kernel "$FLYIO_VM_KERNEL" -initrd "$FLYIO_VM_INITRD" -append "$append" \
	-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
	-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
	-fsdev "local,id=vmctl,path=$ctl,security_model=passthrough,multidevs=remap" \
	-device virtio-9p-pci,fsdev=vmctl,mount_tag=vmctl \
	"${fsargs[@]}" \
	-drive "file=$work/scratch.img,if=virtio,format=raw,cache=unsafe,discard=unmap" \
	-device virtio-rng-pci \
	</dev/null &
qpid=$!
wait "$qpid"
qrc=$?
qpid=
set -e
elapsed=$((SECONDS - start))

if ((qrc == 124 || qrc == 137)); then
	echo "run.sh: VM timed out after $timeout s" >&2
	exit 124
fi
if [[ -f $ctl/exit-code ]]; then
	rc=$(cat "$ctl/exit-code")
	echo "run.sh: guest command exited $rc after ${elapsed}s" >&2
	exit "$rc"
fi
if [[ -f $ctl/boot-error ]]; then
	echo "run.sh: guest failed to boot: $(cat "$ctl/boot-error")" >&2
else
	echo "run.sh: VM exited (qemu status $qrc) after ${elapsed}s without reporting the command's status" >&2
fi
exit 125
