#!/bin/sh
# Runs inside the VM (see smoke_test.sh): proves device-mapper thin
# provisioning works end to end on loop devices backed by the scratch disk.
set -eux
grep -w device-mapper /proc/misc
test -c /dev/mapper/control
grep '^dm_thin_pool ' /proc/modules
stat -f -c %T /tmp | grep -E 'ext2/ext3|ext4'
export DM_DISABLE_UDEV=1
truncate -s 64M /tmp/meta.img
truncate -s 2G /tmp/data.img
meta=$(losetup -f --show /tmp/meta.img)
data=$(losetup -f --show --direct-io=on /tmp/data.img)
dmsetup --noudevsync create smoke-pool --table "0 4194304 thin-pool $meta $data 128 0"
dmsetup --noudevsync message smoke-pool 0 "create_thin 0"
dmsetup --noudevsync create smoke-thin --table "0 2097152 thin /dev/mapper/smoke-pool 0"
mkfs.ext4 -q /dev/mapper/smoke-thin
mkdir -p /tmp/mnt
mount /dev/mapper/smoke-thin /tmp/mnt
echo hello >/tmp/mnt/file
sync
umount /tmp/mnt
dmsetup status smoke-pool
dmsetup --noudevsync remove smoke-thin
dmsetup --noudevsync remove smoke-pool
losetup -d "$meta" "$data"
echo "guest smoke: dm-thin OK"
