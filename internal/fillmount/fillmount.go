// Package fillmount mounts a fresh snapshot for filling it from an
// untrusted archive, and makes sure what was written reached the device
// before the snapshot can be committed.
//
// Every temporary mount of the daemon (fills, the template's lost+found
// removal) goes under one private directory of root_dir, never /tmp: a
// daemon killed with a mount open leaves it there, and Setup unmounts it
// at the next start, before anything judges the devices. A mount left in
// /tmp kept its device busy until a reboot.
package fillmount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Dir is the private directory of rootDir under which the daemon mounts.
func Dir(rootDir string) string { return filepath.Join(rootDir, "mounts") }

// Setup makes dir (mode 0700) and unmounts whatever a killed daemon left
// mounted under it, deepest first, then removes the empty mount points it
// left. It only ever removes empty directories: a mount point it could
// not unmount keeps its files. It returns the mount points it unmounted.
// Call it before reconciling, with no fill running.
func Setup(ctx context.Context, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mount directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("mount directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mount directory %s is not a directory (a symlink?)", dir)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mount directory: %w", err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("mount directory: %w", err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return nil, err
	}
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(real))
	if err != nil {
		return nil, fmt.Errorf("listing mounts under %s: %w", real, err)
	}
	var points []string
	for _, m := range infos {
		if m.Mountpoint != real {
			points = append(points, m.Mountpoint)
		}
	}
	// Deepest first, and each point as often as it is stacked.
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var unmounted []string
	var errs []error
	for _, p := range points {
		err := unix.Unmount(p, 0)
		if errors.Is(err, unix.EBUSY) {
			// Still open (a process holds a file in it): detach it from
			// the tree; the kernel lets go of the device on last close.
			log.G(ctx).Warnf("leftover mount %s is busy; detaching it lazily", p)
			err = unix.Unmount(p, unix.MNT_DETACH)
		}
		switch {
		case err == nil:
			unmounted = append(unmounted, p)
		case errors.Is(err, unix.EINVAL):
			// Gone already (under one unmounted before).
		default:
			errs = append(errs, fmt.Errorf("unmounting leftover %s: %w", p, err))
		}
	}
	entries, err := os.ReadDir(real)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		// Fails, keeping everything, unless the directory is empty.
		if err := os.Remove(filepath.Join(real, e.Name())); err != nil {
			log.G(ctx).WithError(err).Warnf("leaving %s in the mount directory", e.Name())
		}
	}
	return unmounted, errors.Join(errs...)
}

// With mounts mounts nosuid,nodev on a fresh directory under dir (""
// is the system's temp directory, for tools without a root_dir), runs
// fill in it, flushes the filesystem and unmounts. A write error the
// kernel only reports at writeback (a failing data device, a pool out of
// space) is returned by the syncfs here: ext4's unmount would swallow it,
// and the caller would commit a base missing data.
func With(dir string, mounts []mount.Mount, fill func(dir string) error) (err error) {
	ms := make([]mount.Mount, len(mounts))
	for i, m := range mounts {
		m.Options = append(append([]string(nil), m.Options...), "nosuid", "nodev")
		ms[i] = m
	}
	dir, err = os.MkdirTemp(dir, "fill-")
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
