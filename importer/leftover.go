package importer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// releaseLeftoverMounts unmounts every mount of snapshot key's block
// device in this mount namespace, and removes the emptied mount points.
// Only an interrupted run's import snapshot is passed here: nothing else
// has any business having it mounted.
func releaseLeftoverMounts(ctx context.Context, sn snapshots.Snapshotter, key string) error {
	ms, err := sn.Mounts(ctx, key)
	if errdefs.IsNotFound(err) {
		return nil // killed before Prepare, or already removed
	}
	if err != nil {
		return err
	}
	for _, m := range ms {
		if !strings.HasPrefix(m.Source, "/dev/") {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(m.Source, &st); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return err
		}
		major, minor := int(unix.Major(st.Rdev)), int(unix.Minor(st.Rdev))
		infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
			return i.Major != major || i.Minor != minor, false
		})
		if err != nil {
			return err
		}
		for _, i := range infos {
			log.G(ctx).Infof("unmounting %s from %s, left by an interrupted run", m.Source, i.Mountpoint)
			if err := mount.UnmountAll(i.Mountpoint, 0); err != nil {
				return err
			}
			if err := removeMountPoint(i.Mountpoint); err != nil {
				log.G(ctx).WithError(err).Warnf("mount point %s kept", i.Mountpoint)
			}
		}
	}
	return nil
}

// removeMountPoint removes dir, a temporary mount point just unmounted,
// if it is an empty directory that nothing is mounted on. It checks
// mountinfo first and removes with rmdir only: a mount point something
// is still (or again) mounted on is kept whole, and a path that is not
// a directory (a file, a symlink) is never unlinked.
func removeMountPoint(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (%s)", dir, fi.Mode().Type())
	}
	mounted, err := mountinfo.Mounted(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking whether %s is a mount point: %w", dir, err)
	}
	if mounted {
		return fmt.Errorf("%s is still a mount point", dir)
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}
