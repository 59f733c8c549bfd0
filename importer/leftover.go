package importer

import (
	"context"
	"errors"
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
			os.Remove(i.Mountpoint) // only if empty: it was a temporary mount point
		}
	}
	return nil
}
