// Package fillmount mounts a fresh snapshot for filling it from an
// untrusted archive, and makes sure what was written reached the device
// before the snapshot can be committed.
package fillmount

import (
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/core/mount"
	"golang.org/x/sys/unix"
)

// With mounts mounts nosuid,nodev on a temporary directory, runs fill in
// it, flushes the filesystem and unmounts. A write error the kernel only
// reports at writeback (a failing data device, a pool out of space) is
// returned by the syncfs here: ext4's unmount would swallow it, and the
// caller would commit a base missing data.
func With(mounts []mount.Mount, fill func(dir string) error) (err error) {
	ms := make([]mount.Mount, len(mounts))
	for i, m := range mounts {
		m.Options = append(append([]string(nil), m.Options...), "nosuid", "nodev")
		ms[i] = m
	}
	dir, err := os.MkdirTemp("", "flyio-fill-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := mount.All(ms, dir); err != nil {
		return fmt.Errorf("mounting %s: %w", describe(ms), err)
	}
	defer func() {
		if uerr := mount.UnmountAll(dir, 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmounting %s: %w", describe(ms), uerr)
		}
	}()
	root, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := fill(dir); err != nil {
		return err
	}
	if err := unix.Syncfs(int(root.Fd())); err != nil {
		return fmt.Errorf("flushing %s: %w", describe(ms), err)
	}
	return nil
}

func describe(ms []mount.Mount) string {
	if len(ms) == 0 {
		return "no mounts"
	}
	return ms[0].Source
}
