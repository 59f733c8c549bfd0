#!/usr/bin/env bash
# prepare.sh builds (once) everything test/vm/run.sh needs to boot a guest
# with device-mapper thin provisioning: the host packages, a Debian kernel
# unpacked into a cache, and a busybox initramfs that loads the modules.
#
# The cache lives outside the clone (FLYIO_VM_CACHE, default
# /var/cache/flyio-image-manager/vm) so fresh CI checkouts reuse it. Its
# key is the kernel version plus a hash of the guest scripts and this
# file: editing either rebuilds the initramfs, nothing else does.
#
# Prints nothing but progress; on success $FLYIO_VM_CACHE/current.env
# names the kernel and initramfs to boot.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FLYIO_VM_CACHE:-/var/cache/flyio-image-manager/vm}
log() { echo "vm/prepare: $*" >&2; }

# Modules the guest needs, in the order they are asked for; each one's
# dependencies are resolved with modprobe and loaded first. crc32c_generic
# comes first because libcrc32c asks the crypto API for "crc32c" and the
# initramfs has no modprobe helper to load it on demand. Entries prefixed
# with '?' are loaded only if this kernel has them.
modules=(
	crc32c_generic ?crc32c_intel
	virtio_pci virtio_blk virtio_console ?virtio_rng
	9pnet_virtio 9p
	ext4 overlay loop ?xfs
	dm_mod dm_thin_pool
	?dm_flakey ?dm_snapshot ?dm_zero ?dm_delay ?dm_error
	?nbd # lazily-backed origins (internal/nbd); the guest cannot modprobe it
)

need_pkgs=()
for p in qemu-system-x86 busybox-static cpio kmod e2fsprogs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
	log "installing ${need_pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # two concurrent `make vm` must not unpack into the same tree

# The metapackage linux-image-amd64 only depends on the real, versioned
# kernel package; that one is what we unpack. If apt cannot tell (offline),
# fall back to whatever kernel the cache already holds.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
if [[ -z $kpkg ]]; then
	kpkg=$(ls "$cache/kernel" 2>/dev/null | sort -V | tail -n1 || true)
	[[ -n $kpkg ]] || { log "cannot resolve linux-image-amd64 and no cached kernel"; exit 1; }
	log "apt cannot resolve linux-image-amd64; using cached $kpkg"
fi
kroot=$cache/kernel/$kpkg
if [[ ! -e $kroot/.done ]]; then
	log "downloading $kpkg"
	tmp=$(mktemp -d "$cache/.dl.XXXXXX")
	chmod 755 "$tmp" # apt drops to _apt to download
	(cd "$tmp" && apt-get download -qq "$kpkg")
	rm -rf "$kroot"
	mkdir -p "$kroot"
	dpkg -x "$tmp"/"$kpkg"_*.deb "$kroot"
	rm -rf "$tmp"
	kver=$(ls "$kroot/lib/modules" | head -n1)
	# The .deb ships no modules.dep (postinst makes it); modprobe needs it.
	depmod -b "$kroot" "$kver"
	touch "$kroot/.done"
fi
kver=$(ls "$kroot/lib/modules" | head -n1)
vmlinuz=$kroot/boot/vmlinuz-$kver
[[ -r $vmlinuz ]] || { log "no kernel image at $vmlinuz"; exit 1; }

key=$kver-$(cat "$here/prepare.sh" "$here"/guest/* /usr/bin/busybox | sha256sum | cut -c1-16)
initrd=$cache/initramfs-$key.cpio.gz
if [[ ! -e $initrd ]]; then
	log "building initramfs for $kver ($key)"
	stage=$(mktemp -d "$cache/.initrd.XXXXXX")
	trap 'rm -rf "$stage"' EXIT
	mkdir -p "$stage"/{bin,dev,proc,sys,newroot,lib/modules}
	cp /usr/bin/busybox "$stage/bin/busybox"
	install -m 0755 "$here/guest/init" "$stage/init"
	install -m 0755 "$here/guest/stage2" "$stage/stage2"
	: >"$stage/lib/modules/load.list"
	declare -A seen=()
	for m in "${modules[@]}"; do
		optional=0
		[[ $m == \?* ]] && { optional=1; m=${m#\?}; }
		if ! deps=$(modprobe -S "$kver" -d "$kroot" --show-depends "$m" 2>/dev/null); then
			((optional)) && continue
			log "module $m not found in $kver"
			exit 1
		fi
		while read -r kind path _; do
			[[ $kind == insmod ]] || continue # "builtin X": nothing to load
			name=$(basename "$path")
			name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
			[[ -n ${seen[$name]:-} ]] && continue
			seen[$name]=1
			case $path in
			*.xz) xz -dc "$path" >"$stage/lib/modules/$name" ;;
			*.zst) zstd -qdc "$path" >"$stage/lib/modules/$name" ;;
			*.gz) gzip -dc "$path" >"$stage/lib/modules/$name" ;;
			*) cp "$path" "$stage/lib/modules/$name" ;;
			esac
			echo "$name" >>"$stage/lib/modules/load.list"
		done <<<"$deps"
	done
	echo "$kver" >"$stage/kver"
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1) >"$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	# Old images go only after an hour: a concurrent run.sh may have read
	# current.env just before this rebuild and not have started qemu yet.
	find "$cache" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "initramfs-$key.cpio.gz" -mmin +60 -delete
fi

cat >"$cache/current.env.tmp" <<ENV
FLYIO_VM_KVER=$kver
FLYIO_VM_KERNEL=$vmlinuz
FLYIO_VM_INITRD=$initrd
FLYIO_VM_MODULES=$kroot/lib/modules
ENV
mv "$cache/current.env.tmp" "$cache/current.env"
log "ready: kernel $kver, $(basename "$initrd")"
