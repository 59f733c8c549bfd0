package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// The methods in this file are the operator gc's hooks (package gc).
// Each re-checks, in the metadata transaction that claims the device,
// that no snapshot or template uses it: that transaction is the same
// serialisation point Prepare, Commit and Remove go through, so gc
// running beside them can never delete a device one of them is using.
// Snapshots themselves are removed with Remove, which refuses while
// children exist.

// CollectDevice deletes thin device id from the pool and forgets its
// record, provided the record is still in one of states (orphaned,
// quarantined, deleting) and no snapshot or template refers to it. A
// device already gone from the pool just has its record forgotten.
func (s *Snapshotter) CollectDevice(ctx context.Context, id uint32, states ...metadata.DeviceState) error {
	var d *metadata.Device
	err := s.store.Update(func(tx *metadata.Tx) (err error) {
		if d, err = tx.Device(id); err != nil {
			return err
		}
		if !slices.Contains(states, d.State) {
			return fmt.Errorf("device %d is %s now, not %v: %w", id, d.State, states, errdefs.ErrFailedPrecondition)
		}
		if user, err := deviceUser(tx, id); err != nil || user != "" {
			if err == nil {
				err = fmt.Errorf("device %d is used by %s: %w", id, user, errdefs.ErrFailedPrecondition)
			}
			return err
		}
		d.State = metadata.DeviceDeleting
		return tx.PutDevice(d)
	})
	if err != nil {
		return err
	}
	if err := s.deactivateID(ctx, id, d.Name); err != nil {
		return err
	}
	if err := s.pool.Delete(ctx, id); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
		return fmt.Errorf("device %d: %w", id, err)
	}
	return s.store.Update(func(tx *metadata.Tx) error { return tx.DeleteDevice(id) })
}

// CollectUnknownDevice deletes thin id from the pool when the metadata
// has no record of it (a pool that outlived its database, a crash between
// create and record on an older version).
func (s *Snapshotter) CollectUnknownDevice(ctx context.Context, id uint32) error {
	err := s.store.View(func(tx *metadata.Tx) error {
		if _, err := tx.Device(id); !errdefs.IsNotFound(err) {
			if err == nil {
				err = fmt.Errorf("device %d has a record now: %w", id, errdefs.ErrFailedPrecondition)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.deactivateID(ctx, id, s.deviceName(id)); err != nil {
		return err
	}
	if err := s.pool.Delete(ctx, id); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
		return fmt.Errorf("device %d: %w", id, err)
	}
	return nil
}

// ForgetTemplate drops template name and its device record when its
// device is no longer in the pool; the next parentless Prepare makes a
// new one. deviceID guards against a template re-made meanwhile.
func (s *Snapshotter) ForgetTemplate(ctx context.Context, name string, deviceID uint32) error {
	mu := s.templateLock(name)
	mu.Lock()
	defer mu.Unlock()
	return s.store.Update(func(tx *metadata.Tx) error {
		tp, err := tx.Template(name)
		if err != nil {
			return err
		}
		if tp.DeviceID != deviceID {
			return fmt.Errorf("template %q is device %d now, not %d: %w", name, tp.DeviceID, deviceID, errdefs.ErrFailedPrecondition)
		}
		if err := tx.DeleteTemplate(name); err != nil {
			return err
		}
		return tx.DeleteDevice(deviceID)
	})
}

// deviceUser names the snapshot or template whose device is id, or "".
func deviceUser(tx *metadata.Tx, id uint32) (string, error) {
	var user string
	err := tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
		if err == nil && rec.DeviceID == id && user == "" {
			user = fmt.Sprintf("snapshot %q", key)
		}
		return nil
	})
	if err != nil || user != "" {
		return user, err
	}
	err = tx.Templates(func(tp *metadata.Template) error {
		if tp.DeviceID == id && user == "" {
			user = fmt.Sprintf("template %q", tp.Name)
		}
		return nil
	})
	return user, err
}

// activeLister is implemented by *dmpool.Pool; the fake pool of the unit
// tests has no other names for a device than deviceName.
type activeLister interface {
	ListActive(ctx context.Context) ([]dmpool.ActiveDevice, error)
}

// deactivateID removes every dm device showing thin id, under whatever
// name (a crashed tool may have used another). A mounted one fails with
// ErrDeviceBusy and the device is kept.
func (s *Snapshotter) deactivateID(ctx context.Context, id uint32, name string) error {
	names := []string{name}
	if l, ok := s.pool.(activeLister); ok {
		active, err := l.ListActive(ctx)
		if err != nil {
			return err
		}
		for _, a := range active {
			if a.ID == id && a.Name != name {
				names = append(names, a.Name)
			}
		}
	}
	for _, n := range names {
		if err := s.pool.Deactivate(ctx, n); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
			return fmt.Errorf("device %d (%s): %w", id, n, err)
		}
	}
	return nil
}

// ConfirmMissing returns nil only if thin id is absent from the live
// pool, and snapshot (when not "") is still recorded on device id. gc
// finds "records without device" in a metadata snapshot of the pool; the
// device is asked for here, by loading a table for it on a probe dm
// device: the kernel opens the thin id in the pool's current metadata,
// and refuses with ENODATA only if it does not exist. Any other answer,
// a failed pool included, keeps the record.
func (s *Snapshotter) ConfirmMissing(ctx context.Context, snapshot string, id uint32) error {
	if snapshot != "" {
		err := s.store.View(func(tx *metadata.Tx) error {
			rec, err := tx.Snapshot(snapshot)
			if err != nil {
				return err
			}
			if rec.DeviceID != id {
				return fmt.Errorf("snapshot %q is on device %d now, not %d: %w", snapshot, rec.DeviceID, id, errdefs.ErrFailedPrecondition)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	probe := probeName(s.pool.Name(), id)
	_, err := s.pool.Activate(ctx, probe, id, 512)
	switch {
	case errors.Is(err, dmpool.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("probing thin id %d: %w", id, err)
	}
	if err := s.pool.Deactivate(ctx, probe); err != nil && !errors.Is(err, dmpool.ErrNotFound) {
		log.G(ctx).WithError(err).Warnf("gc: could not remove probe device %s", probe)
	}
	return fmt.Errorf("thin id %d is in the pool: %w", id, errdefs.ErrFailedPrecondition)
}
