package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Lost writes. containerd's applier writes a layer through a temporary
// mount and unmounts it without a syncfs; with error_if_no_space a pool
// that fills meanwhile fails the writeback with EIO, and ext4's unmount
// drops that error. Nobody tells Commit. What Commit can know is whether
// the pool had trouble since the snapshot was prepared: dm-thin changes
// the pool's mode (to out-of-data-space, read-only, fail) before it errors
// a bio, and raises a device-mapper event on every mode change. So:
//
//   - metadata.PoolTrouble keeps a generation, bumped durably whenever the
//     pool is seen in trouble or its event counter moved for a reason we
//     did not cause;
//   - a snapshot records the generation at Prepare;
//   - Commit looks at the pool once more after the device is deactivated
//     (all its I/O is done then) and refuses, before the commit is
//     durable, a snapshot whose generation is older or whose pool is in
//     trouble now.
//
// The pool's event counter lives in the kernel as long as the pool device
// does, so events while the daemon was down are seen at the next start
// (the counter differs from the one on record). A watcher wakes on every
// device-mapper event (and every troublePoll) so that trouble is on
// record even if no Prepare or Commit looks.
//
// Events are counted, not read: the counter says how many, not which.
// Two or more unexplained events count as trouble (a trip to out of data
// space and back is two). One event with the pool healthy is not: every
// mode change into trouble leaves the pool in trouble, and the change back
// comes after one into it, so a lone event is a low-water mark crossed
// (dm-thin raises one when free data blocks fall to [pool]
// low_water_mark, and one for metadata). A low-water event together with
// a trip out of space is three events: trouble, as it must be.

// troublePoll bounds the time between two looks of the watcher when no
// event wakes it (a kernel without a pollable control device).
const troublePoll = 10 * time.Second

// eventWaiter is what the watcher waits on: *dmpool.EventWaiter, or a
// test's.
type eventWaiter interface {
	Wait(timeout time.Duration) (woken bool, _ error)
	Close()
	Release()
}

// troubleWatch is the snapshotter's in-memory side of PoolTrouble.
type troubleWatch struct {
	mu sync.Mutex
	// troubled is the pool's trouble at the last look ("" healthy):
	// trouble that lasts is one bump, not one per look. It starts
	// healthy, so a pool in trouble at start is a bump.
	troubled string
	// reload is the event counter around Open's own table reload, until
	// the first look has discounted it.
	reload *dmpool.ReloadEvents

	waiter eventWaiter
	// klogStop ends the kernel log's drain (kernellog.go).
	klogStop chan struct{}
	done     sync.WaitGroup
}

// observeTrouble reads the pool's mode and event counter and, if the pool
// is in new trouble or had an event we cannot explain, bumps the trouble
// generation (durably, before it returns). It returns the record and the
// pool's trouble now.
func (s *Snapshotter) observeTrouble(ctx context.Context) (metadata.PoolTrouble, string, error) {
	w := &s.trouble
	w.mu.Lock()
	defer w.mu.Unlock()
	st, err := s.pool.Events(ctx)
	if err != nil {
		return metadata.PoolTrouble{}, "", fmt.Errorf("reading the pool's mode: %w", err)
	}
	now := poolTrouble(st)
	reload := w.reload
	var pt metadata.PoolTrouble
	if err := s.store.View(func(tx *metadata.Tx) (err error) {
		pt, err = tx.PoolTrouble()
		return err
	}); err != nil {
		return pt, now, err
	}
	// base is the counter our own reload left, when it is the one on
	// record; delta the events since. A counter below the one on record
	// belongs to a pool device made again (a reboot, or check_on_start):
	// its events start from zero and say nothing of the old device's,
	// so only its mode counts (a pool the kernel loads in trouble stays
	// in trouble, and is seen so). Counting the wrap as trouble refused
	// every Commit of a snapshot prepared before a reboot (TestStress).
	base := pt.EventNr
	if reload != nil && base == reload.Before {
		base = reload.After
	}
	recreated := st.EventNr < base
	delta := st.EventNr - base
	reason := ""
	switch {
	case now != "" && w.troubled == "":
		reason = "pool " + now
	case recreated:
		log.G(ctx).WithField("pool", s.pool.Name()).Infof("pool event counter %d is below the %d on record: the pool device was made again; its own events count from here", st.EventNr, base)
	case !pt.Known || delta == 0:
	case delta == 1 && now == "":
		// One event and the pool healthy: not a mode change. A change
		// into trouble leaves the pool in trouble, and the change back
		// to write mode is a second event after it; one event alone is
		// a low-water mark crossed (data or metadata).
		log.G(ctx).WithField("pool", s.pool.Name()).Infof("pool event %d with the pool healthy (a low-water mark crossed): not trouble", st.EventNr)
	default:
		reason = fmt.Sprintf("%d device-mapper events on the pool (event counter %d, was %d)", delta, st.EventNr, pt.EventNr)
		if delta == 1 || delta > 1<<31 {
			reason = fmt.Sprintf("device-mapper event on the pool (event counter %d, was %d)", st.EventNr, pt.EventNr)
		}
		if now != "" {
			reason += ", pool " + now
		}
	}
	kernelReason, seq, gen, err := s.scanKernelLog(ctx, pt)
	if err != nil {
		// Nothing bumped: the records are read at the next look; a
		// Commit cannot vouch for its writes this time.
		return pt, now, err
	}
	if kernelReason != "" {
		if reason != "" {
			reason += "; "
		}
		reason += kernelReason
		// Never back: a bump for lost records has no record of its
		// own, and a restart must not count what was counted.
		if seq > 0 && (pt.KernelBoot != s.klog.boot || seq > pt.KernelSeq) {
			pt.KernelBoot, pt.KernelSeq = s.klog.boot, seq
		}
	}
	if reason == "" && pt.Known && pt.EventNr == st.EventNr {
		w.troubled, w.reload = now, nil
		return pt, now, nil
	}
	next := pt
	next.EventNr, next.Known = st.EventNr, true
	if reason != "" {
		next.Bump(reason, time.Now().UTC())
	}
	if err := s.store.Update(func(tx *metadata.Tx) error { return tx.PutPoolTrouble(next) }); err != nil {
		return pt, now, fmt.Errorf("recording pool trouble: %w", err)
	}
	if kernelReason != "" {
		s.klog.recorded(gen)
	}
	w.troubled, w.reload = now, nil
	if reason != "" {
		log.G(ctx).WithField("pool", s.pool.Name()).Warnf("pool trouble seen: %s; snapshots prepared before it will not be committed (trouble generation %d)", reason, next.Generation)
	}
	return next, now, nil
}

// lostWritesError says why Commit refuses rec, or nil. pt is the latest
// trouble record and now the pool's trouble when Commit looked, after the
// device was deactivated. The advice depends on the trouble and on what
// the snapshot is (troubleadvice.go).
func (s *Snapshotter) lostWritesError(key string, rec *metadata.Snapshot, pt metadata.PoolTrouble, now string) error {
	retry := retryAdvice(purposeOf(key), key)
	switch {
	case pt.Refuses(rec):
		first := pt.Since(rec.TroubleGen)
		cause := first.Reason
		if now != "" {
			cause = "pool " + now
		}
		return fmt.Errorf("commit %q refused: its writes may have been lost: pool %q had trouble since the snapshot was prepared (%s, at %s; trouble generation %d, the snapshot's %d). "+
			"%s; %s: %w",
			key, s.pool.Name(), first.Reason, first.At.Format(time.RFC3339), pt.Generation, rec.TroubleGen,
			causeAdvice(cause, now == ""), retry, errdefs.ErrFailedPrecondition)
	case now != "":
		return fmt.Errorf("commit %q refused: its writes may have been lost: pool %q is %s. "+
			"%s; %s: %w",
			key, s.pool.Name(), now, causeAdvice("pool "+now, false), retry, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// poolTrouble is st.Trouble(), naming a full metadata device too: the
// kernel makes such a pool read-only, and freeing data does not help it.
func poolTrouble(st dmpool.Status) string {
	t := st.Trouble()
	if t != "" && st.TotalMetaBlocks > 0 && st.UsedMetaBlocks >= st.TotalMetaBlocks {
		t += ", out of metadata space"
	}
	return t
}

// startTroubleWatch takes the first look (events while the daemon was
// down, a pool in trouble at start) and starts the watcher when w is set.
func (s *Snapshotter) startTroubleWatch(ctx context.Context, w eventWaiter) {
	s.openKernelLog(ctx, kernelLogPath)
	if r, ok := s.pool.(interface{ OpenReload() *dmpool.ReloadEvents }); ok {
		s.trouble.reload = r.OpenReload()
	}
	// A pool found in trouble and made again by the start-up check shows
	// neither in its new device's events nor in its mode: bump here.
	if c, ok := s.pool.(interface{ CheckedOnStart() string }); ok && c.CheckedOnStart() != "" {
		reason := "pool was " + c.CheckedOnStart() + " at start (checked and loaded again)"
		err := s.store.Update(func(tx *metadata.Tx) error {
			pt, err := tx.PoolTrouble()
			if err != nil {
				return err
			}
			pt.Bump(reason, time.Now().UTC())
			return tx.PutPoolTrouble(pt)
		})
		if err != nil {
			log.G(ctx).WithError(err).Warn("recording the trouble the start-up check found")
		} else {
			log.G(ctx).WithField("pool", s.pool.Name()).Warnf("pool trouble seen: %s; snapshots prepared before it will not be committed", reason)
		}
	}
	if _, _, err := s.observeTrouble(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("pool trouble check at start failed; Commit checks again")
	}
	if s.klog.open() {
		stop := make(chan struct{})
		s.trouble.klogStop = stop
		s.trouble.done.Add(1)
		go func() {
			defer s.trouble.done.Done()
			s.watchKernelLog(context.WithoutCancel(ctx), stop)
		}()
	}
	if w == nil {
		return
	}
	s.trouble.waiter = w
	s.trouble.done.Add(1)
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer s.trouble.done.Done()
		defer w.Release()
		for {
			_, err := w.Wait(troublePoll)
			if errors.Is(err, dmpool.ErrWaiterClosed) {
				return
			}
			if err != nil {
				// Not a wedge either way: the look below still runs,
				// and the pause keeps a broken poll from spinning.
				log.G(ctx).WithError(err).Debug("pool event wait failed")
				time.Sleep(time.Second)
			}
			if _, _, err := s.observeTrouble(ctx); err != nil {
				log.G(ctx).WithError(err).Debug("pool trouble check failed")
			}
		}
	}()
}

// stopTroubleWatch ends the watcher and waits for it.
func (s *Snapshotter) stopTroubleWatch() {
	if s.trouble.waiter != nil {
		s.trouble.waiter.Close()
	}
	if s.trouble.klogStop != nil {
		close(s.trouble.klogStop)
		s.trouble.klogStop = nil
	}
	s.trouble.done.Wait()
}

// stampTrouble records in rec, inside the transaction that creates it, the
// trouble generation its writes are judged against at Commit.
// distrustStampIfTroubled looks at the pool right after a claim stamped
// rec: the admission check came before the stamp, and the pool may have
// gone out of space in between, with the watcher's bump committed before
// the stamp, which then carries the bumped generation. If the pool
// recovers before the Commit, nothing else would show that the
// snapshot's writes failed. The slow path checks the pool after its
// stamp (CreateSnapshot); a claim marks the record as prepared before
// the trouble instead, so its Commit is refused. A status that cannot be
// read counts as trouble.
func (s *Snapshotter) distrustStampIfTroubled(ctx context.Context, rec *metadata.Snapshot) {
	if st, err := s.pool.Events(ctx); err == nil && st.Trouble() == "" {
		return
	}
	if rec.TroubleGen == 0 {
		// No trouble on record yet: the next look bumps to 1 and the
		// Commit is refused already.
		return
	}
	err := s.store.Update(func(tx *metadata.Tx) error {
		cur, err := tx.Snapshot(rec.Key)
		if err != nil {
			return err
		}
		if cur.TroubleGen == rec.TroubleGen {
			cur.TroubleGen--
		}
		return tx.PutSnapshot(cur)
	})
	if err != nil {
		log.G(ctx).WithError(err).Warnf("snapshot %q was claimed while the pool had trouble and could not be marked so; its Commit checks the pool again", rec.Key)
		return
	}
	rec.TroubleGen--
}

func stampTrouble(tx *metadata.Tx, rec *metadata.Snapshot) error {
	pt, err := tx.PoolTrouble()
	if err != nil {
		return err
	}
	rec.TroubleGen = pt.Generation
	return nil
}
