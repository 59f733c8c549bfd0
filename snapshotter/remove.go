package snapshotter

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Remove deletes the snapshot key and its thin device. It refuses while
// other snapshots depend on it.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	ctx = withSnapshot(ctx, key, "")
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	defer unlock()
	var rec *metadata.Snapshot
	var op *metadata.Op
	err = s.store.Update(func(tx *metadata.Tx) (err error) {
		rec, err = tx.Snapshot(key)
		if err != nil {
			return err
		}
		if kids := tx.Children(key); len(kids) > 0 {
			return fmt.Errorf("remove %q: %d snapshot(s) depend on it, e.g. %q: %w", key, len(kids), kids[0], errdefs.ErrFailedPrecondition)
		}
		if rec.State == metadata.SnapshotCreating {
			return fmt.Errorf("remove %q: still being created: %w", key, errdefs.ErrUnavailable)
		}
		rec.State = metadata.SnapshotRemoving
		if err := tx.PutSnapshot(rec); err != nil {
			return err
		}
		op, err = tx.BeginOp("remove", key, rec.DeviceID)
		return err
	})
	if err != nil {
		return err
	}
	failpoint.Hit(failpoint.RemoveAfterMark)
	ctx = s.withDevice(ctx, rec.DeviceID)
	name := s.deviceName(rec.DeviceID)
	if err := s.pool.Deactivate(ctx, name); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
		// Still mounted somewhere: give the snapshot back untouched.
		s.restore(ctx, rec, op)
		return fmt.Errorf("remove %q: %w", key, err)
	}
	if err := s.step(op, "deactivated"); err != nil {
		return err
	}
	failpoint.Hit(failpoint.RemoveAfterDeactivate)
	s.discard(ctx, name, rec.DeviceID, rec.Size)
	// From here the snapshot is gone for containerd whatever the pool says;
	// a device that cannot be deleted now stays on record as "deleting" and
	// Cleanup retries it.
	delErr := s.pool.Delete(ctx, rec.DeviceID)
	failpoint.Hit(failpoint.RemoveAfterDelete)
	if errors.Is(delErr, dmpool.ErrNotFound) {
		delErr = nil
	}
	err = s.store.Update(func(tx *metadata.Tx) error {
		if err := tx.DeleteSnapshot(key); err != nil {
			return err
		}
		if delErr == nil {
			if err := tx.DeleteDevice(rec.DeviceID); err != nil {
				return err
			}
		} else if err := markDevice(tx, rec.DeviceID, metadata.DeviceDeleting, delErr); err != nil {
			return err
		}
		return tx.EndOp(op)
	})
	if delErr != nil {
		log.G(ctx).WithError(delErr).Warnf("thin device %s of removed snapshot %q left for Cleanup", name, key)
	} else if err == nil {
		log.G(ctx).Debug("snapshot removed")
	}
	return err
}

// restore puts a snapshot back to ready after a Remove that could not
// deactivate its device.
func (s *Snapshotter) restore(ctx context.Context, rec *metadata.Snapshot, op *metadata.Op) {
	err := s.store.Update(func(tx *metadata.Tx) error {
		rec.State = metadata.SnapshotReady
		if err := tx.PutSnapshot(rec); err != nil {
			return err
		}
		return tx.EndOp(op)
	})
	if err != nil {
		log.G(ctx).WithError(err).Errorf("restoring snapshot %q after a failed remove", rec.Key)
	}
}

func (s *Snapshotter) endOp(ctx context.Context, op *metadata.Op) {
	if err := s.store.Update(func(tx *metadata.Tx) error { return tx.EndOp(op) }); err != nil {
		log.G(ctx).WithError(err).Errorf("closing op %d (%s %q)", op.ID, op.Type, op.Key)
	}
}

func markDevice(tx *metadata.Tx, id uint32, state metadata.DeviceState, cause error) error {
	d, err := tx.Device(id)
	if err != nil {
		return err
	}
	d.State = state
	if cause != nil {
		d.Error = cause.Error()
	}
	return tx.PutDevice(d)
}

// Cleanup deletes the thin devices whose snapshots are gone but whose
// deletion failed earlier. containerd calls it after its garbage
// collection.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	var pending []*metadata.Device
	err := s.store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil && d.State == metadata.DeviceDeleting {
				pending = append(pending, d)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range pending {
		if err := s.deleteDevice(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteDevice deactivates and deletes a device marked deleting, then
// forgets it.
func (s *Snapshotter) deleteDevice(ctx context.Context, d *metadata.Device) error {
	ctx = s.withDevice(ctx, d.ID)
	log.G(ctx).Debug("deleting a removed snapshot's device")
	if err := s.pool.Deactivate(ctx, d.Name); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
		return err
	}
	s.discard(ctx, d.Name, d.ID, d.Size)
	if err := s.pool.Delete(ctx, d.ID); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
		return err
	}
	failpoint.Hit(failpoint.CleanupAfterDelete)
	return s.store.Update(func(tx *metadata.Tx) error { return tx.DeleteDevice(d.ID) })
}

// discard hands an inactive device's blocks back to the data device
// before its delete, when discard_blocks is set. The caller has
// deactivated the device, which proved nobody had it open. A failure is
// logged and the delete goes ahead: the removal needs the delete, not the
// discard.
func (s *Snapshotter) discard(ctx context.Context, name string, id uint32, size uint64) {
	if !s.cfg.DiscardBlocks {
		return
	}
	if err := s.pool.Discard(ctx, name, id, size); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
		log.G(ctx).WithError(err).Warnf("could not discard the blocks of %s before deleting it", name)
	}
}
