package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Remove deletes the snapshot key. It refuses while other snapshots
// depend on it.
//
// Remove only marks: in one transaction the record goes and its device is
// marked "deleting"; the dm work (deactivate, with up to 5 s of EBUSY
// retries, discard, delete) is left to the reaper that Remove starts
// (which retries a device still busy in the background, with a backoff)
// and to Cleanup. containerd calls Remove from its garbage collection while it
// holds its snapshotter lock exclusively (every Prepare, Commit and Remove
// of the node waits), and Cleanup after it let go of it, so the time
// spent under containerd's lock is one metadata transaction. A device
// marked deleting is never reused (its id stays allocated until its record
// goes), is not a snapshot any more for Stat, Walk or a child's Prepare,
// and a crash before it is deleted leaves it to the next start's
// reconcile, which runs Cleanup.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	ctx = withSnapshot(ctx, key, "")
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	defer unlock()
	// A device someone has open (a container's mount, a VMM) keeps its
	// record: Remove refused it when it did the dm work inline, and that
	// refusal is the last guard against a caller (our own gc included)
	// that misjudged the snapshot unused. One ioctl, no retries, outside
	// the transaction (no dm work inside one): containerd retries at its
	// next GC. The key lock keeps Commit and Remove of key out meanwhile.
	if n, err := s.openCount(key); err != nil || n > 0 {
		if err == nil {
			err = fmt.Errorf("its device is open (count %d): unmount it or stop what uses it first", n)
		}
		return fmt.Errorf("remove %q: %w: %w", key, err, errdefs.ErrFailedPrecondition)
	}
	var rec *metadata.Snapshot
	var alsoRemoved []string
	// Against an adoption walk while hidden layers may be removed with
	// key (unadopted.go).
	s.adoptMu.Lock()
	err = s.store.Update(func(tx *metadata.Tx) (err error) {
		alsoRemoved = nil
		rec, err = tx.Snapshot(key)
		if err != nil {
			return err
		}
		if kids := tx.Children(key); len(kids) > 0 {
			removed, ok := s.removeUnadoptedChildren(tx, kids, time.Now())
			if !ok {
				return fmt.Errorf("remove %q: %d snapshot(s) depend on it, e.g. %q: %w", key, len(kids), kids[0], errdefs.ErrFailedPrecondition)
			}
			alsoRemoved = removed
		}
		if rec.State == metadata.SnapshotCreating {
			return fmt.Errorf("remove %q: still being created: %w", key, errdefs.ErrUnavailable)
		}
		if err := tx.DeleteSnapshot(key); err != nil {
			return err
		}
		return markDevice(tx, rec.DeviceID, metadata.DeviceDeleting, nil)
	})
	s.adoptMu.Unlock()
	if err != nil {
		return err
	}
	s.forgetUnadopted(append(alsoRemoved, key)...)
	if len(alsoRemoved) > 0 {
		log.G(ctx).Infof("layers filled in the background on it and never adopted removed with it: %v", alsoRemoved)
	}
	failpoint.Hit(failpoint.RemoveAfterMark)
	ctx = s.withDevice(ctx, rec.DeviceID)
	if s.cfg.RemoveInline {
		// The old path, kept as the benchmarks' baseline: the dm work
		// inside the caller's call.
		s.reapMu.Lock()
		defer s.reapMu.Unlock()
		if d, err := s.markedDevice(rec.DeviceID); err == nil && d != nil {
			if err := s.deleteDevice(ctx, d); err != nil {
				log.G(ctx).WithError(err).Warnf("thin device %s of removed snapshot %q left for Cleanup", d.Name, key)
			}
		}
		return nil
	}
	s.kickReaper(ctx)
	log.G(ctx).Debug("snapshot removed; its device is deleted in the background")
	return nil
}

// deviceOpener is the part of *dmpool.Pool that tells whether a device is
// open; a pool without it (unit tests' fake, unless it adds it) reports
// every device closed.
type deviceOpener interface {
	OpenCount(name string) (int32, error)
}

// openCount is how many times the active device of snapshot key is
// open: 0 when it is not active, or when key has no record (Remove's
// transaction then says so).
func (s *Snapshotter) openCount(key string) (int32, error) {
	o, ok := s.pool.(deviceOpener)
	if !ok {
		return 0, nil
	}
	var name string
	err := s.store.View(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot(key)
		if err != nil {
			return nil
		}
		d, err := tx.Device(rec.DeviceID)
		if err != nil {
			return nil
		}
		name = d.Name
		return nil
	})
	if err != nil || name == "" {
		return 0, err
	}
	return o.OpenCount(name)
}

// markedDevice reads device id's record when it is marked deleting.
func (s *Snapshotter) markedDevice(id uint32) (d *metadata.Device, err error) {
	err = s.store.View(func(tx *metadata.Tx) error {
		got, err := tx.Device(id)
		if err != nil {
			return err
		}
		if got.State == metadata.DeviceDeleting {
			d = got
		}
		return nil
	})
	return d, err
}

// kickReaper makes sure a background pass over the devices marked
// deleting runs after this call: at most one pass waits at a time, and a
// pass that is waiting reads the records only once it runs, so it sees
// every mark made before the kick. The pass runs on a context Close
// cancels: a shutdown does not wait for a busy device's retries.
func (s *Snapshotter) kickReaper(ctx context.Context) {
	if !s.reapQueued.CompareAndSwap(false, true) {
		return
	}
	ctx, stop := s.untilClose(ctx)
	started := s.goBackground(func() {
		defer stop()
		s.reapMu.Lock()
		defer s.reapMu.Unlock()
		s.reapQueued.Store(false)
		if err := s.reapMarked(ctx); err != nil {
			log.G(ctx).WithError(err).Debug("some removed snapshots' devices could not be deleted yet; retried in the background")
		}
	})
	if !started {
		// Closing: the next start's reconcile runs Cleanup.
		stop()
		s.reapQueued.Store(false)
	}
}

// untilClose is ctx's values without its cancellation, cancelled instead
// when the snapshotter closes: for work that outlives its caller.
func (s *Snapshotter) untilClose(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if s.closing == nil {
		return ctx, cancel
	}
	stopAfter := context.AfterFunc(s.closing, cancel)
	return ctx, func() { stopAfter(); cancel() }
}

// reapRetry bounds the background retries of devices whose deletion
// failed (a device still busy after deleteDevice's own EBUSY retries):
// the first after first, each next one after twice the wait, at most
// max, and no more than attempts of them; after that containerd's next
// Cleanup and the next start's reconcile still retry.
type reapRetry struct {
	first, max time.Duration
	attempts   int
}

var defaultReapRetry = reapRetry{first: 2 * time.Second, max: 2 * time.Minute, attempts: 10}

// retryReapLater starts the background retries of the devices marked
// deleting unless they are running already; reapMarked calls it when a
// deletion failed.
func (s *Snapshotter) retryReapLater(ctx context.Context) {
	if !s.reapRetrying.CompareAndSwap(false, true) {
		return
	}
	r := s.reapRetry
	if r.attempts == 0 {
		r = defaultReapRetry
	}
	ctx, stop := s.untilClose(ctx)
	started := s.goBackground(func() {
		defer stop()
		wait := r.first
		for attempt := 1; ; attempt++ {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				s.reapRetrying.Store(false)
				return
			case <-t.C:
			}
			s.reapMu.Lock()
			err := s.reapMarked(ctx)
			// Cleared under reapMu: a pass that fails after this one
			// starts the retries again.
			done := err == nil || ctx.Err() != nil || attempt >= r.attempts
			if done {
				s.reapRetrying.Store(false)
			}
			s.reapMu.Unlock()
			if done {
				if err != nil && ctx.Err() == nil {
					log.G(ctx).WithError(err).Warnf("removed snapshots' devices still not deleted after %d background retries; containerd's Cleanup and the next start retry them", attempt)
				}
				return
			}
			wait = min(2*wait, r.max)
		}
	})
	if !started {
		stop()
		s.reapRetrying.Store(false)
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

// Cleanup deletes the thin devices of removed snapshots: those Remove
// marked and the background reaper has not deleted yet, and those whose
// deletion failed earlier. containerd calls it after its garbage
// collection, once it has let go of its snapshotter lock.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
	return s.reapMarked(ctx)
}

// reapMarked deletes every device marked deleting; the caller holds
// reapMu, so Cleanup, the reaper and the retries never work on one device
// at once. A device whose deletion fails is retried in the background
// (retryReapLater) and warned about once, at its first failure.
func (s *Snapshotter) reapMarked(ctx context.Context) error {
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
	failures := s.reapFailures
	s.reapFailures = map[uint32]int{}
	var errs []error
	for _, d := range pending {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		// Read again just before the dm work: only a device still
		// marked deleting is touched.
		d, err := s.markedDevice(d.ID)
		if err != nil || d == nil {
			continue
		}
		err = s.deleteDevice(ctx, d)
		if err == nil {
			if n := failures[d.ID]; n > 0 {
				log.G(s.withDevice(ctx, d.ID)).Infof("removed snapshot's device deleted after %d failed attempt(s)", n)
			}
			continue
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			// Closing: not the device's failure.
			s.reapFailures[d.ID] = failures[d.ID]
			continue
		}
		s.reapFailures[d.ID] = failures[d.ID] + 1
		if failures[d.ID] == 0 {
			log.G(s.withDevice(ctx, d.ID)).WithError(err).Warn("could not delete a removed snapshot's device; retried in the background (logged once)")
		} else {
			log.G(s.withDevice(ctx, d.ID)).WithError(err).Debugf("removed snapshot's device still not deleted (attempt %d)", failures[d.ID]+1)
		}
		// Recorded for status and gc: why it is still there.
		s.store.Update(func(tx *metadata.Tx) error { return markDevice(tx, d.ID, metadata.DeviceDeleting, err) })
	}
	// Also when the caller gave up (containerd's Cleanup on a context
	// that ended): the retries run on their own context, until Close.
	if len(errs) > 0 && (s.closing == nil || s.closing.Err() == nil) {
		s.retryReapLater(ctx)
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
	failpoint.Hit(failpoint.CleanupAfterDeactivate)
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
