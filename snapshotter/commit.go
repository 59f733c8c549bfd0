package snapshotter

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Commit turns the active snapshot key into the committed snapshot name.
// The device is kept and deactivated: a committed snapshot is never written
// again, and an inactive origin can be snapshotted without a suspend.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	ctx = withFields(ctx, log.Fields{fieldKey: key, fieldName: name})
	var rec *metadata.Snapshot
	var op *metadata.Op
	err := s.store.Update(func(tx *metadata.Tx) (err error) {
		rec, err = tx.Snapshot(key)
		if err != nil {
			return err
		}
		if rec.Kind != snapshots.KindActive || rec.State != metadata.SnapshotReady {
			return fmt.Errorf("commit %q: snapshot is %s %s, not a ready active snapshot: %w", key, rec.State, rec.Kind, errdefs.ErrFailedPrecondition)
		}
		if _, err := tx.Snapshot(name); err == nil {
			return fmt.Errorf("commit %q as %q: %w", key, name, errdefs.ErrAlreadyExists)
		}
		op, err = tx.BeginOp("commit", key, rec.DeviceID)
		return err
	})
	if err != nil {
		return err
	}
	failpoint.Hit(failpoint.CommitAfterBegin)
	ctx = s.withDevice(ctx, rec.DeviceID)
	devName := s.deviceName(rec.DeviceID)
	usage, err := s.pool.ThinStatus(ctx, devName)
	if err == nil {
		err = s.pool.Deactivate(ctx, devName)
	}
	failpoint.Hit(failpoint.CommitAfterDeactivate)
	if err != nil {
		s.endOp(ctx, op)
		return fmt.Errorf("commit %q: %w", key, err)
	}
	if err := s.step(op, "deactivated"); err != nil {
		return err
	}
	failpoint.Hit(failpoint.CommitBeforeRename)

	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return err
		}
	}
	err = s.store.Update(func(tx *metadata.Tx) error {
		committed := *rec
		committed.Key, committed.Kind = name, snapshots.KindCommitted
		// A commit is a new snapshot for containerd: created now.
		committed.Created = time.Now().UTC()
		committed.Updated = committed.Created
		committed.UsageBytes = int64(usage.MappedBytes)
		if len(info.Labels) > 0 {
			committed.Labels = info.Labels
		}
		if err := tx.RenameSnapshot(key, &committed); err != nil {
			return err
		}
		d, err := tx.Device(rec.DeviceID)
		if err != nil {
			return err
		}
		d.Owner = name
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.EndOp(op)
	})
	if err == nil {
		log.G(ctx).Debugf("snapshot committed (%d bytes mapped)", usage.MappedBytes)
	}
	return err
}
