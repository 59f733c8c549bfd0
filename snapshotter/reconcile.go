package snapshotter

import (
	"context"
	"fmt"
	"slices"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/metadata"
)

// reconcile brings the pool and the metadata back in step at start-up.
// Changes a crash interrupted are finished when that is safe (a remove)
// and set aside otherwise (a half-made device is orphaned, never deleted);
// devices a reboot deactivated are activated again. Nothing in here stops
// the daemon for one bad record: it is logged and skipped.
func (s *Snapshotter) reconcile(ctx context.Context) error {
	var moved []string
	if err := s.store.Update(func(tx *metadata.Tx) (err error) {
		moved, err = tx.QuarantineUndecodable()
		return err
	}); err != nil {
		return fmt.Errorf("setting undecodable records aside: %w", err)
	}
	for _, m := range moved {
		log.G(ctx).Errorf("quarantined %s; it is kept in the database's quarantine bucket and its thin device is left to 'flyio-image-manager gc'", m)
	}
	var ops []*metadata.Op
	if err := s.store.View(func(tx *metadata.Tx) (err error) {
		ops, err = tx.Ops()
		return err
	}); err != nil {
		return fmt.Errorf("reading unfinished operations: %w", err)
	}
	for _, op := range ops {
		if err := s.recoverOp(ctx, op); err != nil {
			log.G(ctx).WithError(err).Errorf("could not recover interrupted %s of %q (op %d)", op.Type, op.Key, op.ID)
		}
	}
	s.reactivate(ctx)
	if err := s.Cleanup(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("some deleted snapshots' devices could not be removed yet")
	}
	return nil
}

func (s *Snapshotter) recoverOp(ctx context.Context, op *metadata.Op) error {
	ctx = s.withDevice(withSnapshot(ctx, op.Key, ""), op.DeviceID)
	log.G(ctx).Infof("recovering interrupted %s of %q (device %d, steps %v)", op.Type, op.Key, op.DeviceID, op.Steps)
	switch op.Type {
	case "prepare", "template", "spare":
		// The device may exist half-made: orphan it for gc.
		return s.store.Update(func(tx *metadata.Tx) error {
			if op.Type == "prepare" {
				if rec, err := tx.Snapshot(op.Key); err == nil && rec.State == metadata.SnapshotCreating && rec.DeviceID == op.DeviceID {
					if err := tx.DeleteSnapshot(op.Key); err != nil {
						return err
					}
				}
			}
			if err := markDevice(tx, op.DeviceID, metadata.DeviceOrphaned, fmt.Errorf("%s of %q interrupted after steps %v", op.Type, op.Key, op.Steps)); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			log.G(ctx).Warnf("orphaned device %s detected after failed creation; run 'flyio-image-manager gc --force' to clean up", s.deviceName(op.DeviceID))
			return tx.EndOp(op)
		})
	case "commit":
		// Either the rename happened (and the op would be gone) or the
		// snapshot is still active; reactivate() brings its device back.
		return s.store.Update(func(tx *metadata.Tx) error { return tx.EndOp(op) })
	case "remove":
		// containerd asked for the removal: finish it. The device is
		// marked deleting and Cleanup deletes it.
		return s.store.Update(func(tx *metadata.Tx) error {
			if rec, err := tx.Snapshot(op.Key); err == nil && rec.DeviceID == op.DeviceID {
				if err := tx.DeleteSnapshot(op.Key); err != nil {
					return err
				}
			}
			if err := markDevice(tx, op.DeviceID, metadata.DeviceDeleting, nil); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			return tx.EndOp(op)
		})
	default:
		return fmt.Errorf("unknown op type %q", op.Type)
	}
}

// reactivate activates the devices of every active snapshot and view:
// after a reboot the pool is reloaded but its thin devices are not.
func (s *Snapshotter) reactivate(ctx context.Context) {
	var live []*metadata.Snapshot
	s.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err != nil {
				log.G(ctx).WithError(err).Errorf("skipping snapshot record %q", key)
				return nil
			}
			if rec.Kind != snapshots.KindCommitted && rec.State == metadata.SnapshotReady {
				live = append(live, rec)
			}
			return nil
		})
	})
	slices.SortFunc(live, func(a, b *metadata.Snapshot) int { return int(a.DeviceID) - int(b.DeviceID) })
	for _, rec := range live {
		ctx := s.withDevice(withSnapshot(ctx, rec.Key, rec.Parent), rec.DeviceID)
		_, err := s.activate(ctx, rec)
		switch {
		case err != nil:
			log.G(ctx).WithError(err).Errorf("could not activate device %s of snapshot %q; quarantined, the daemon serves everything else", s.deviceName(rec.DeviceID), rec.Key)
		case rec.ExternalOrigin != "":
			log.G(ctx).Infof("activated device %s of snapshot %q on external origin %q", s.deviceName(rec.DeviceID), rec.Key, rec.ExternalOrigin)
		}
		s.setQuarantine(ctx, rec.DeviceID, err)
	}
	// Spares are claimed without activation, so they must be active too.
	var spares []*metadata.Device
	s.store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil && d.Role == metadata.RoleSpare && d.State == metadata.DeviceReady {
				spares = append(spares, d)
			}
			return nil
		})
	})
	for _, d := range spares {
		ctx := s.withDevice(ctx, d.ID)
		if _, err := s.pool.Activate(ctx, d.Name, d.ID, d.Size); err != nil {
			log.G(ctx).WithError(err).Errorf("could not activate spare device %s; marking it for deletion", d.Name)
			s.store.Update(func(tx *metadata.Tx) error { return markDevice(tx, d.ID, metadata.DeviceDeleting, err) })
		}
	}
}

// setQuarantine marks a live snapshot's device quarantined when it could
// not be activated, and ready again once it could.
func (s *Snapshotter) setQuarantine(ctx context.Context, id uint32, cause error) {
	err := s.store.Update(func(tx *metadata.Tx) error {
		d, err := tx.Device(id)
		if err != nil {
			return err
		}
		switch {
		case cause != nil:
			d.State, d.Error = metadata.DeviceQuarantined, "activation at start failed: "+cause.Error()
		case d.State == metadata.DeviceQuarantined:
			d.State, d.Error = metadata.DeviceReady, ""
		default:
			return nil
		}
		return tx.PutDevice(d)
	})
	if err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).Errorf("recording the state of device %d", id)
	}
}
