package snapshotter

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/metadata"
)

// Mounts returns the mounts of an active snapshot or a view.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var rec *metadata.Snapshot
	err := s.store.View(func(tx *metadata.Tx) (err error) {
		rec, err = tx.Snapshot(key)
		return err
	})
	if err != nil {
		return nil, err
	}
	if rec.Kind == snapshots.KindCommitted {
		return nil, fmt.Errorf("snapshot %q is committed; only active snapshots and views have mounts: %w", key, errdefs.ErrFailedPrecondition)
	}
	if rec.State != metadata.SnapshotReady {
		return nil, fmt.Errorf("snapshot %q is %s: %w", key, rec.State, errdefs.ErrUnavailable)
	}
	return s.mounts(rec), nil
}

// mounts describes how to mount rec's device.
func (s *Snapshotter) mounts(rec *metadata.Snapshot) []mount.Mount {
	dev := "/dev/mapper/" + s.deviceName(rec.DeviceID)
	ro := rec.Kind == snapshots.KindView
	if s.cfg.BlockMounts {
		// For microVM runtimes: the source is the block device itself;
		// the runtime attaches it to the guest rather than mounting it.
		opts := []string{"rw"}
		if ro {
			opts[0] = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: dev, Options: opts}}
	}
	var opts []string
	if ro {
		opts = append(opts, "ro")
	}
	if rec.FSType == "xfs" {
		// Every snapshot of one template shares the filesystem UUID.
		opts = append(opts, "nouuid")
	}
	return []mount.Mount{{Type: rec.FSType, Source: dev, Options: opts}}
}
