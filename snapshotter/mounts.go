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

// mounts describes how to mount rec's device: one ext4 (or xfs) mount
// whose Source is the thin device's node. containerd's unpacker and runc
// mount it; microVM runtimes (firecracker-containerd, Kata) see a single
// mount whose Source is a block device and attach Source to the guest
// instead (docs/microvm.md).
func (s *Snapshotter) mounts(rec *metadata.Snapshot) []mount.Mount {
	dev := "/dev/mapper/" + s.deviceName(rec.DeviceID)
	ro := rec.Kind == snapshots.KindView
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
