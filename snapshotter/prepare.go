package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Prepare creates an active snapshot of parent (or an empty filesystem)
// under key and returns its mounts.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

// View creates a read-only snapshot of parent under key.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

// maxCreateAttempts bounds retries when the pool already holds a thin id
// the metadata believed free (a pool that outlived its database).
const maxCreateAttempts = 8

func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	if key == "" {
		return nil, fmt.Errorf("snapshot key must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	// Checked before anything else: a size dm-thin cannot take would
	// otherwise reach create_thin and orphan a device every time.
	size, err := s.requestedSize(info.Labels)
	if err != nil {
		return nil, err
	}
	blankFS, err := blankFSType(kind, parent, info.Labels)
	if err != nil {
		return nil, err
	}
	extOrigin, err := s.externalOrigin(blankFS, info.Labels)
	if err != nil {
		return nil, err
	}
	ctx = withSnapshot(ctx, key, parent)
	if blankFS == "" && s.remoteCandidate(kind, info.Labels) {
		err := s.fillRemote(ctx, parent, info.Labels)
		if err == nil {
			return nil, fmt.Errorf("target snapshot %q: %w", info.Labels[snapshots.LabelSnapshotRef], errdefs.ErrAlreadyExists)
		}
		switch {
		case errors.Is(err, errFillPending):
			// Not waiting any longer under containerd's lock (see
			// remoteFill): containerd fetches this layer itself this
			// time, the fill finishes for later pulls.
			log.G(ctx).WithError(err).Infof("layer %s is still being filled from the remote store; containerd fetches it this time", info.Labels[snapshots.LabelSnapshotRef])
		case ctx.Err() != nil:
			return nil, fmt.Errorf("prepare %q: %w", key, ctx.Err())
		case !errors.Is(err, errNotRemote):
			log.G(ctx).WithError(err).Warnf("filling layer %s from the remote store failed; containerd will fetch it", info.Labels[snapshots.LabelSnapshotRef])
		}
	}
	if kind == snapshots.KindActive {
		// Trouble the watcher has not recorded yet is put on record
		// before this snapshot takes its generation: it happened before
		// the snapshot's writes, so it must not refuse their Commit.
		if _, _, err := s.observeTrouble(ctx); err != nil {
			log.G(ctx).WithError(err).Warn("pool trouble check at prepare failed; Commit checks again")
		}
	}
	if blankFS == "" && parent == "" && s.spares != nil && s.defaultSize(info.Labels) {
		rec, err := s.spares.claim(ctx, kind, key, info.Labels)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			log.G(s.withDevice(ctx, rec.DeviceID)).WithField("kind", kindName(kind)).Debug("snapshot prepared from a spare device")
			return s.mounts(rec), nil
		}
	}
	// A blank device has no origin (0: create_thin, as the device
	// record says).
	var origin uint32
	fsType := blankFS
	if blankFS == "" {
		if origin, size, fsType, err = s.origin(ctx, parent, size); err != nil {
			return nil, err
		}
	}
	healed := false
	for attempt := 1; ; attempt++ {
		rec, op, err := s.reserve(kind, key, parent, info.Labels, origin, size, fsType, extOrigin)
		if err != nil {
			return nil, err
		}
		ctx := s.withDevice(ctx, rec.DeviceID)
		failpoint.Hit(failpoint.PrepareAfterReserve)
		if blankFS != "" {
			err = s.pool.CreateThin(ctx, rec.DeviceID)
		} else {
			err = s.pool.CreateSnapshot(ctx, rec.DeviceID, origin)
		}
		failpoint.Hit(failpoint.PrepareAfterCreateSnap)
		if errors.Is(err, dmpool.ErrDeviceExists) && attempt < maxCreateAttempts {
			// The id is taken by a device the metadata does not know:
			// keep it on record as an orphan for gc and take the next id.
			s.abandon(ctx, rec, op, err, false)
			continue
		}
		if parent == "" && blankFS == "" && errors.Is(err, dmpool.ErrNotFound) && !healed {
			// The template's device is gone from the pool although its
			// record says ready: make a new template and try once more.
			s.abandon(ctx, rec, op, err, false)
			s.forgetTemplate(ctx, templateName(fsType, size), origin, err)
			healed = true
			if origin, size, fsType, err = s.origin(ctx, parent, size); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			s.abandon(ctx, rec, op, err, false)
			return nil, fmt.Errorf("prepare %q: %w", key, err)
		}
		if _, err := s.activate(ctx, rec); err != nil {
			s.abandon(ctx, rec, op, err, true)
			return nil, fmt.Errorf("prepare %q: %w", key, err)
		}
		failpoint.Hit(failpoint.PrepareAfterActivate)
		if err := s.finishCreate(rec, op); err != nil {
			return nil, err
		}
		log.G(ctx).WithField("kind", kindName(kind)).Debugf("snapshot prepared from device %d", origin)
		return s.mounts(rec), nil
	}
}

// defaultSize reports whether a parentless snapshot with these labels
// gets the default base size (and so can be a spare).
func (s *Snapshotter) defaultSize(labels map[string]string) bool {
	v, ok := labels[snapshots.LabelSnapshotMaxSize]
	return !ok || v == strconv.FormatUint(s.cfg.BaseSize, 10)
}

const (
	minSnapshotSize = 16 << 20
	// maxSnapshotSize bounds the max-size label: a template of that size
	// is formatted with its inode tables written out, so an absurd size
	// would fill the pool (or take hours) on the first Prepare.
	maxSnapshotSize = 16 << 40
)

// requestedSize is the filesystem size of a parentless snapshot: the base
// size, or the containerd.io/snapshot/max-size label. The label is
// untrusted input: it must be a decimal byte count, a whole number of
// 512-byte sectors, from 16MiB to 16TiB. It is checked even when a parent
// makes it moot, so that a bad label is always the same clear error.
func (s *Snapshotter) requestedSize(labels map[string]string) (uint64, error) {
	v, ok := labels[snapshots.LabelSnapshotMaxSize]
	if !ok {
		return s.cfg.BaseSize, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n < minSnapshotSize || n > maxSnapshotSize || n%dmpool.SectorSize != 0 {
		return 0, fmt.Errorf("label %s=%q: want a decimal byte count, a multiple of %d, from 16MiB to 16TiB: %w",
			snapshots.LabelSnapshotMaxSize, v, dmpool.SectorSize, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// origin finds the thin id a new snapshot is made from: the committed
// parent's device, or the empty template of size.
func (s *Snapshotter) origin(ctx context.Context, parent string, size uint64) (origin uint32, _ uint64, fsType string, err error) {
	if parent == "" {
		tp, err := s.template(ctx, s.cfg.FSType, size)
		if err != nil {
			return 0, 0, "", err
		}
		return tp.DeviceID, tp.Size, tp.FSType, nil
	}
	err = s.store.View(func(tx *metadata.Tx) error {
		p, err := tx.Snapshot(parent)
		if err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		if p.Kind != snapshots.KindCommitted || p.State != metadata.SnapshotReady {
			return fmt.Errorf("parent %q is not a committed snapshot: %w", parent, errdefs.ErrInvalidArgument)
		}
		origin, size, fsType = p.DeviceID, p.Size, p.FSType
		return nil
	})
	return origin, size, fsType, err
}

// reserve records the new snapshot (state creating), its device id and the
// op, in one transaction, before any device exists. A snapshot of a
// parent reads from the parent's external origin, if it has one;
// extOrigin is a blank device's.
func (s *Snapshotter) reserve(kind snapshots.Kind, key, parent string, labels map[string]string, origin uint32, size uint64, fsType, extOrigin string) (*metadata.Snapshot, *metadata.Op, error) {
	now := time.Now().UTC()
	rec := &metadata.Snapshot{
		Key: key, Kind: kind, Parent: parent, Labels: labels,
		Created: now, Updated: now,
		State: metadata.SnapshotCreating, Size: size, FSType: fsType,
		ExternalOrigin: extOrigin,
	}
	var op *metadata.Op
	err := s.store.Update(func(tx *metadata.Tx) error {
		if parent != "" {
			p, err := tx.Snapshot(parent)
			if err != nil {
				return fmt.Errorf("parent: %w", err)
			}
			if p.State != metadata.SnapshotReady || p.DeviceID != origin {
				return fmt.Errorf("parent %q is being removed: %w", parent, errdefs.ErrFailedPrecondition)
			}
			rec.ExternalOrigin = p.ExternalOrigin
		}
		id, err := tx.AllocateDeviceID()
		if err != nil {
			return err
		}
		rec.DeviceID = id
		if err := stampTrouble(tx, rec); err != nil {
			return err
		}
		if err := tx.CreateSnapshot(rec); err != nil {
			return err
		}
		if err := tx.PutDevice(&metadata.Device{
			ID: id, Name: s.deviceName(id), Origin: origin, Size: size,
			State: metadata.DeviceCreating, Role: metadata.RoleSnapshot, Owner: key,
		}); err != nil {
			return err
		}
		op, err = tx.BeginOp("prepare", key, id)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return rec, op, nil
}

// finishCreate marks the snapshot and its device ready and closes the op.
func (s *Snapshotter) finishCreate(rec *metadata.Snapshot, op *metadata.Op) error {
	return s.store.Update(func(tx *metadata.Tx) error {
		rec.State = metadata.SnapshotReady
		if err := tx.PutSnapshot(rec); err != nil {
			return err
		}
		d, err := tx.Device(rec.DeviceID)
		if err != nil {
			return err
		}
		d.State = metadata.DeviceReady
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.EndOp(op)
	})
}

// abandon undoes a reservation whose device work failed: the snapshot
// record goes, and the device is handled by abandonDevice.
func (s *Snapshotter) abandon(ctx context.Context, rec *metadata.Snapshot, op *metadata.Op, cause error, created bool) {
	s.abandonDevice(ctx, rec.DeviceID, rec.Key, op, cause, created)
}

// abandonDevice records the failed creation of device id (and drops the
// snapshot record key, when given). A device that was created, or whose
// creation failed in an unknown way, is never deleted here: following
// the fail-dumb rule it is kept as an orphan for gc, because tearing down
// a device that just failed is how nodes wedge.
func (s *Snapshotter) abandonDevice(ctx context.Context, id uint32, key string, op *metadata.Op, cause error, created bool) {
	// A create refused for want of space, a read-only or failed pool or a
	// missing origin made nothing: the id can simply be forgotten.
	clean := !created && (errors.Is(cause, dmpool.ErrPoolFull) || errors.Is(cause, dmpool.ErrPoolReadOnly) ||
		errors.Is(cause, dmpool.ErrPoolFailed) || errors.Is(cause, dmpool.ErrNotFound) || errors.Is(cause, dmpool.ErrPoolMissing))
	name := s.deviceName(id)
	err := s.store.Update(func(tx *metadata.Tx) error {
		if key != "" {
			if err := tx.DeleteSnapshot(key); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
		}
		if clean {
			if err := tx.DeleteDevice(id); err != nil {
				return err
			}
		} else if err := markDevice(tx, id, metadata.DeviceOrphaned, cause); err != nil {
			return err
		}
		return tx.EndOp(op)
	})
	if err != nil {
		log.G(ctx).WithError(err).Errorf("recording the failed creation of %s", name)
	}
	if !clean {
		log.G(ctx).WithError(cause).Warnf("orphaned device %s detected after failed creation; run 'flyio-image-manager gc --force' to clean up", name)
	}
}

func (s *Snapshotter) step(op *metadata.Op, step string) error {
	return s.store.Update(func(tx *metadata.Tx) error { return tx.StepOp(op, step) })
}
