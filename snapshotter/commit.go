package snapshotter

import (
	"context"
	"errors"
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
//
// Commit holds the locks of key and name throughout, so a second Commit
// of key or a Remove of either waits and then sees the outcome. Options
// are applied before any device work; a step that fails after the
// deactivation activates the device again, leaving the snapshot active,
// ready and usable as it was.
//
// A snapshot whose writes may have been lost (the pool had trouble since
// it was prepared, trouble.go) is refused with FailedPrecondition before
// anything is committed; it stays active, and containerd's unpacker
// removes it and fails the pull.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	ctx = withFields(ctx, log.Fields{fieldKey: key, fieldName: name})
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return fmt.Errorf("commit %q: %w", key, err)
		}
	}
	unlock, err := s.keys.lock(ctx, key, name)
	if err != nil {
		return fmt.Errorf("commit %q: %w", key, err)
	}
	defer unlock()
	var rec *metadata.Snapshot
	var op *metadata.Op
	err = s.store.Update(func(tx *metadata.Tx) (err error) {
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
		// Its kernel name, for the kernel log's records about it that
		// the trouble look below reads after it is gone.
		if err = s.noteDevice(ctx, devName); err == nil {
			err = s.pool.Deactivate(ctx, devName)
		}
	}
	failpoint.Hit(failpoint.CommitAfterDeactivate)
	if err != nil {
		// Nothing changed: the device is still active (a busy device is
		// not removed).
		s.endOp(ctx, op)
		return fmt.Errorf("commit %q: %w", key, err)
	}
	// No step is journalled for the deactivation: whatever happens next,
	// the record still says active and ready, and a restart's reconcile
	// activates the device again (reactivate); a write here would only
	// add a sync to the time containerd's transaction waits for us.
	//
	// With the device deactivated every write to it has completed or
	// failed, and dm-thin changed the pool's mode before failing any:
	// look now, and record what is seen, before the commit is durable.
	pt, troubleNow, err := s.observeTrouble(ctx)
	if err != nil {
		err = fmt.Errorf("cannot tell whether writes were lost: %w", err)
	}
	failpoint.Hit(failpoint.CommitBeforeRename)
	if err == nil {
		err = s.store.Update(func(tx *metadata.Tx) error {
			// Checked again inside the rename: whatever changed the
			// record since the first transaction (another process on
			// this database) wins, and this commit is undone.
			cur, err := tx.Snapshot(key)
			if err != nil {
				return err
			}
			if cur.Kind != snapshots.KindActive || cur.State != metadata.SnapshotReady || cur.DeviceID != rec.DeviceID {
				return fmt.Errorf("commit %q: snapshot changed during the commit: %w", key, errdefs.ErrConflict)
			}
			// The generation is read again here: a bump by the watcher
			// since observeTrouble is serialised with this transaction.
			if cur, err := tx.PoolTrouble(); err != nil {
				return err
			} else if cur.Generation > pt.Generation {
				pt = cur
			}
			if err := s.lostWritesError(key, rec, pt, troubleNow); err != nil {
				log.G(ctx).WithError(err).Error("commit refused: the snapshot's writes may have been lost")
				return errRefused{err}
			}
			committed := *cur
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
	}
	if err != nil {
		s.undoCommit(ctx, rec, op, err)
		var r errRefused
		if errors.As(err, &r) {
			return r.err
		}
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	log.G(ctx).Debugf("snapshot committed (%d bytes mapped)", usage.MappedBytes)
	return nil
}

// undoCommit activates again the device of an active snapshot whose
// commit failed after the deactivation, so that the snapshot that is still
// "ready" on record has its device. The activation runs even when the
// caller has gone: a ready snapshot without a device is what must not be
// left. Should it fail, the device is quarantined and the next start's
// reconcile tries again.
func (s *Snapshotter) undoCommit(ctx context.Context, rec *metadata.Snapshot, op *metadata.Op, cause error) {
	ctx = context.WithoutCancel(ctx)
	_, err := s.activate(ctx, rec)
	if err != nil {
		log.G(ctx).WithError(err).Errorf("commit failed (%v) and the device could not be activated again; quarantined until the next start", cause)
	} else {
		log.G(ctx).WithError(cause).Warn("commit failed; the snapshot stays active with its device")
	}
	s.setQuarantine(ctx, rec.DeviceID, err)
	s.endOp(ctx, op)
}

// errRefused carries Commit's refusal of a snapshot with possibly lost
// writes out of the transaction, so that it is returned as it is (it names
// the snapshot already).
type errRefused struct{ err error }

func (e errRefused) Error() string { return e.err.Error() }
func (e errRefused) Unwrap() error { return e.err }
