package importer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/metadata"
)

// ErrCancelled is the cause of a run's context when an operator cancels
// it, which tells it apart from a daemon shutdown (after which the run
// resumes).
var ErrCancelled = errors.New("cancelled by the operator")

// Cancel stops run id if it is queued, downloading or extracting, waits
// until it has cleaned up (its half-filled snapshot removed, nothing
// committed or registered) and returns its final record, in state
// cancelled.
//
// A run that has started committing is not cancelled: it is seconds from
// done, and stopping it between the commit of its base and the
// registration of its image is exactly what would leave a base that looks
// valid without its image. Cancel says so (errdefs.ErrFailedPrecondition)
// and the operator deletes the image once it is done. An unknown id is
// errdefs.ErrNotFound and a finished run errdefs.ErrFailedPrecondition.
func (im *Importer) Cancel(ctx context.Context, id string) (metadata.Run, error) {
	im.mu.Lock()
	rs, live := im.active[id]
	im.mu.Unlock()
	if !live {
		return im.cancelRecord(id)
	}
	rs.mu.Lock()
	state := rs.run.State
	switch {
	case state == metadata.RunCommitting:
		rs.mu.Unlock()
		return rs.snapshot(), fmt.Errorf("process-image run %s is committing; too late to cancel, use 'delete-image %s' once it is done: %w", id, rs.run.ImageID, errdefs.ErrFailedPrecondition)
	case state.Finished():
		rs.mu.Unlock()
		return rs.snapshot(), fmt.Errorf("process-image run %s is already %s; nothing to cancel: %w", id, state, errdefs.ErrFailedPrecondition)
	case !rs.cancelled:
		rs.cancelled, rs.cancelledIn = true, state
		log.G(im.ctx).WithField("run", id).Infof("cancelling process-image run %s (%s) at the operator's request", id, state)
	}
	rs.mu.Unlock()
	rs.cancel(ErrCancelled)
	select {
	case <-rs.done:
	case <-ctx.Done():
		return rs.snapshot(), ctx.Err()
	}
	return im.Get(id)
}

// cancelRecord handles a run that no goroutine works on: unknown,
// finished, or left unfinished by a previous daemon and not resumed yet
// (it is then marked cancelled so that Resume skips it).
func (im *Importer) cancelRecord(id string) (metadata.Run, error) {
	var out metadata.Run
	err := im.store.Update(func(tx *metadata.Tx) error {
		r, err := tx.Run(id)
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("process-image run %s: no such run: %w", id, errdefs.ErrNotFound)
		}
		if err != nil {
			return err
		}
		out = *r
		if r.State.Finished() {
			return fmt.Errorf("process-image run %s is already %s; nothing to cancel: %w", id, r.State, errdefs.ErrFailedPrecondition)
		}
		r.Error = fmt.Sprintf("%v (while %s, before it was resumed)", ErrCancelled, r.State)
		r.State = metadata.RunCancelled
		out = *r
		return tx.PutRun(r)
	})
	return out, err
}

func (rs *runState) cancelRequested() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.cancelled
}

// enterCommitting moves the run to committing unless it was cancelled:
// the check and the move are one step under rs.mu, so Cancel either
// stops the run before it commits or refuses. It also frees the run's
// unpacks slot: the download and extraction are over.
func (im *Importer) enterCommitting(rs *runState, edit func(*metadata.Run)) error {
	rs.mu.Lock()
	if rs.cancelled {
		rs.mu.Unlock()
		return ErrCancelled
	}
	rs.run.State = metadata.RunCommitting
	edit(&rs.run)
	release := rs.release
	rs.mu.Unlock()
	if release != nil {
		release()
	}
	im.setState(rs, metadata.RunCommitting, nil)
	return nil
}

// finishCancelled records a cancelled run after making sure its snapshot
// is gone: the failure paths of process remove it, but a cancel that cut
// short the removal of a resumed run's leftover would leave it.
func (im *Importer) finishCancelled(ctx context.Context, rs *runState, cause error) {
	r := rs.snapshot()
	rs.mu.Lock()
	in := rs.cancelledIn
	rs.mu.Unlock()
	if r.SnapshotKey != "" {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := im.discard(cctx, r.SnapshotKey); err != nil {
			log.G(ctx).WithError(err).Errorf("cancelled run left snapshot %s; gc will report it", r.SnapshotKey)
		}
	}
	log.G(ctx).WithError(cause).Infof("process-image cancelled by the operator while %s", in)
	im.setState(rs, metadata.RunCancelled, func(r *metadata.Run) {
		r.Error = fmt.Sprintf("%v while %s", ErrCancelled, in)
	})
}

// discard unmounts and removes an import snapshot; gone already is fine.
func (im *Importer) discard(ctx context.Context, key string) error {
	cli, err := im.cd.Client(ctx)
	if err != nil {
		return err
	}
	sn := cli.SnapshotService(im.cfg.Snapshotter)
	if err := releaseLeftoverMounts(ctx, sn, key); err != nil {
		return err
	}
	if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}
