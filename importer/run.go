package importer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/internal/fillmount"
	"github.com/superfly/flyio-image-manager/metadata"
)

// execute runs one process-image run to its end and records the outcome.
func (im *Importer) execute(rs *runState) {
	r := rs.snapshot()
	ctx := withNamespace(rs.ctx, im.cd)
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("run", r.ID).WithField("s3_key", r.Key))
	// Waiting in the unpacks queue does not count against UnpackTimeout.
	release, err := im.unpacks.Acquire(ctx, r.ID)
	if err == nil {
		defer release()
		rs.mu.Lock()
		rs.release = release
		rs.mu.Unlock()
		tctx, cancel := context.WithTimeout(ctx, im.cfg.UnpackTimeout)
		err = im.process(tctx, rs)
		cancel()
	}
	if errors.Is(err, context.DeadlineExceeded) && im.ctx.Err() == nil {
		err = fmt.Errorf("extraction timeout after %s (UNPACK_TIMEOUT): %w", im.cfg.UnpackTimeout, err)
	}
	if err != nil && rs.cancelRequested() {
		// Checked before shutdown: a run the operator cancelled is not
		// resumed, even when the daemon is stopping too.
		im.finishCancelled(ctx, rs, err)
		return
	}
	if err != nil && im.ctx.Err() != nil {
		// The daemon is stopping: leave the run unfinished so the next
		// start resumes it.
		log.G(ctx).WithError(err).Info("process-image interrupted by shutdown; it resumes on the next start")
		return
	}
	if err != nil {
		log.G(ctx).WithError(err).Error("process-image failed")
		im.setState(rs, metadata.RunFailed, func(r *metadata.Run) { r.Error = err.Error() })
		return
	}
	log.G(ctx).Infof("process-image done: %s is %s", rs.snapshot().Ref, rs.snapshot().ChainID)
}

// setState updates the live run and persists it.
func (im *Importer) setState(rs *runState, state metadata.RunState, edit func(*metadata.Run)) {
	rs.mu.Lock()
	rs.run.State = state
	if edit != nil {
		edit(&rs.run)
	}
	r := rs.run
	rs.mu.Unlock()
	if err := im.store.Update(func(tx *metadata.Tx) error { return tx.PutRun(&r) }); err != nil {
		log.G(im.ctx).WithError(err).Errorf("recording run %s as %s", r.ID, state)
	}
}

func (im *Importer) process(ctx context.Context, rs *runState) error {
	cli, err := im.cd.Client(ctx)
	if err != nil {
		return err
	}
	// The lease keeps containerd's GC off the snapshot being filled.
	ctx, releaseLease, err := cli.WithLease(ctx)
	if err != nil {
		return fmt.Errorf("containerd lease: %w", err)
	}
	defer releaseLease(context.WithoutCancel(ctx))

	sn := cli.SnapshotService(im.cfg.Snapshotter)
	r := rs.snapshot()
	key := "flyio-import-" + r.ID
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("key", key))
	// A resumed run starts over: whatever a crash left is discarded. A
	// daemon killed mid-extraction leaves the snapshot mounted, and that
	// mount would keep its thin device busy for good: containerd's Remove
	// only drops its own record, and its GC then fails on our side with
	// "device is busy" on every pass. So release the mount first.
	if err := releaseLeftoverMounts(ctx, sn, key); err != nil {
		return fmt.Errorf("unmounting the half-filled snapshot %s of an interrupted run: %w", key, err)
	}
	// A block fill is the exception: its journal says which chunks are
	// on its device, so it keeps the device and continues.
	resume := canResumeBlock(ctx, sn, r)
	if resume {
		log.G(ctx).Infof("continuing the block fill of snapshot %s from its journal", key)
	} else if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing the half-filled snapshot %s of an interrupted run: %w", key, err)
	}
	// Its figures start over too: they only grow while it streams.
	im.setState(rs, metadata.RunDownloading, func(r *metadata.Run) {
		r.SnapshotKey, r.Error = key, ""
		r.CompressedBytes, r.Bytes, r.Entries = 0, 0, 0
	})
	failpoint.Hit(failpoint.ImportAfterDownloading)

	var res extract.Result
	switch {
	case r.Lazy:
		res, err = im.fillLazy(ctx, sn, key, rs)
	case r.Block != "":
		res, err = im.fillBlock(ctx, sn, key, rs, resume)
	default:
		res, err = im.fill(ctx, sn, key, rs)
	}
	if err != nil {
		if r.Block != "" && !r.Lazy && im.ctx.Err() != nil && !rs.cancelRequested() {
			// The daemon is stopping: keep the device, whose journalled
			// chunks the next start continues from.
			return err
		}
		if rmErr := sn.Remove(context.WithoutCancel(ctx), key); rmErr != nil && !errdefs.IsNotFound(rmErr) {
			log.G(ctx).WithError(rmErr).Errorf("failed import left snapshot %s; gc will report it", key)
		}
		return err
	}
	failpoint.Hit(failpoint.ImportAfterExtract)

	// Past this point Cancel refuses: a commit or registration cut off
	// halfway could leave a base without its image.
	if err := im.enterCommitting(rs, func(r *metadata.Run) {
		r.DiffID, r.Digest, r.ChainID = res.DiffID, res.Digest, res.DiffID
		r.Compression = res.Compression
		r.Bytes, r.CompressedBytes, r.Entries = res.Bytes, res.CompressedBytes, res.Entries
	}); err != nil {
		if rmErr := sn.Remove(context.WithoutCancel(ctx), key); rmErr != nil && !errdefs.IsNotFound(rmErr) {
			log.G(ctx).WithError(rmErr).Errorf("cancelled import left snapshot %s; gc will report it", key)
		}
		return err
	}
	// One layer: its chain id is its diff id.
	chainID := res.DiffID
	failpoint.Hit(failpoint.ImportBeforeCommit)
	if err := sn.Commit(ctx, chainID, key); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			sn.Remove(context.WithoutCancel(ctx), key)
			return fmt.Errorf("committing base %s: %w", chainID, err)
		}
		// The same content was imported before (another key or ETag):
		// keep the existing base.
		if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	}
	failpoint.Hit(failpoint.ImportAfterCommit)
	r = rs.snapshot()
	if err := registerImage(ctx, cli, im.cfg.Snapshotter, r, res); err != nil {
		return err
	}
	failpoint.Hit(failpoint.ImportAfterRegister)
	img := &metadata.Image{ID: r.ImageID, Ref: r.Ref, ChainID: chainID, RunID: r.ID, Bucket: r.Bucket, Key: r.Key, ETag: r.ETag, Created: time.Now().UTC()}
	if err := im.store.Update(func(tx *metadata.Tx) error { return tx.PutImage(img) }); err != nil {
		return err
	}
	failpoint.Hit(failpoint.ImportBeforeDone)
	im.setState(rs, metadata.RunDone, nil)
	return nil
}

// fill prepares the snapshot, mounts it nosuid,nodev and streams the
// object through the extractor into it.
func (im *Importer) fill(ctx context.Context, sn snapshots.Snapshotter, key string, rs *runState) (extract.Result, error) {
	r := rs.snapshot()
	mounts, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(map[string]string{
		"flyio.io/import-run": r.ID,
		"flyio.io/s3-key":     r.Key,
	}))
	if err != nil {
		return extract.Result{}, fmt.Errorf("preparing a snapshot for %s: %w", r.Key, err)
	}
	failpoint.Hit(failpoint.ImportAfterPrepare)
	var res extract.Result
	err = fillmount.With(im.cfg.MountDir, mounts, func(dir string) (err error) {
		res, err = im.stream(ctx, dir, rs)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("filling snapshot %s: %w", key, err)
	}
	return res, nil
}

func (im *Importer) stream(ctx context.Context, dir string, rs *runState) (res extract.Result, err error) {
	fill := im.cfg.Fills.Start()
	defer func() { fill.Done(res, err) }()
	r := rs.snapshot()
	im.setDownload(rs, "waiting")
	defer im.setDownload(rs, "")
	obj, err := im.s3.Open(ctx, r.Key)
	if err != nil {
		return extract.Result{}, err
	}
	defer obj.Close()
	im.setDownload(rs, "active")
	if obj.ETag != r.ETag {
		return extract.Result{}, fmt.Errorf("s3://%s/%s changed since the run started (etag %s, now %s): %w", r.Bucket, r.Key, r.ETag, obj.ETag, errdefs.ErrFailedPrecondition)
	}
	im.setState(rs, metadata.RunExtracting, nil)
	// The bytes read from S3 show in the live run (and the fetched-bytes
	// metric) as they arrive, not only at the extractor's Progress, which
	// waits for MiBs of uncompressed stream. Both count the same reads,
	// so the figures only grow; the record is written only at state
	// changes, not per chunk.
	counter := newReadCounter(obj, func(n int64) {
		rs.addCompressed(n)
		fill.Progress(extract.Progress{CompressedBytes: n})
	})
	defer counter.Stop()
	opts := im.cfg.Extract
	opts.Progress = func(p extract.Progress) {
		rs.mu.Lock()
		rs.run.CompressedBytes = max(rs.run.CompressedBytes, p.CompressedBytes)
		rs.run.Bytes, rs.run.Entries = p.Bytes, p.Entries
		rs.mu.Unlock()
		fill.Progress(p)
		failpoint.Hit(failpoint.ImportMidExtract)
	}
	opts.Warn = func(s string) { log.G(ctx).Warn(s) }
	res, err = extract.Extract(ctx, counter, dir, opts)
	if err != nil {
		return res, fmt.Errorf("extracting s3://%s/%s: %w", r.Bucket, r.Key, err)
	}
	return res, nil
}

// addCompressed raises the live run's CompressedBytes to n, never lowering
// it: the read counter and the extractor's Progress report the same
// stream at different times.
func (rs *runState) addCompressed(n int64) {
	rs.mu.Lock()
	rs.run.CompressedBytes = max(rs.run.CompressedBytes, n)
	rs.mu.Unlock()
}
