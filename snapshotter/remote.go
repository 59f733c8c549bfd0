package snapshotter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/internal/fillmount"
	"github.com/superfly/flyio-image-manager/metrics"
)

// RemoteLayers is a store of image layers outside the host (the S3 layer
// store). When containerd unpacks a layer it finds there, the snapshotter
// fills the snapshot itself and containerd never downloads the layer.
type RemoteLayers interface {
	// Open returns the layer blob (tar, tar+gzip or tar+zstd) described by
	// the labels containerd's unpacker put on the Prepare, and the diff id
	// the uncompressed stream must hash to. ok is false when the store has
	// no such layer.
	Open(ctx context.Context, labels map[string]string) (blob io.ReadCloser, diffID string, ok bool, err error)
}

// remoteName is the committed snapshot a remote fill of chain id ref
// produces. containerd finds it by the ref label, not by this name.
func remoteName(ref string) string { return "remote/" + ref }

// fillOnce makes the committed snapshot remoteName(ref) from the remote
// layer store; it runs in a remoteFill's goroutine (remotefill.go), once
// for all the Prepares that wait for it. It returns nil when the
// committed snapshot exists, with made set when this fill committed it,
// errNotRemote when the layer is not in the store, and another error when
// fetching or extracting failed. Only a fully extracted and verified
// layer is committed: a failure or a cancellation removes the fill
// snapshot.
func (s *Snapshotter) fillOnce(ctx context.Context, parent string, labels map[string]string) (made bool, _ error) {
	ref := labels[snapshots.LabelSnapshotRef]
	name := remoteName(ref)
	if info, err := s.Stat(ctx, name); err == nil {
		if info.Kind == snapshots.KindCommitted && info.Parent == parent {
			return false, nil // filled before, e.g. for another namespace
		}
		return false, fmt.Errorf("snapshot %q exists with parent %q, not %q", name, info.Parent, parent)
	}
	fill := s.cfg.RemoteFills.Start()
	blob, diffID, ok, err := s.cfg.Remote.Open(ctx, labels)
	if err != nil {
		fill.Done(extract.Result{}, err)
		return false, err
	}
	if !ok {
		return false, errNotRemote
	}
	defer blob.Close()

	tmp := "remote-fill/" + ref + "/" + randomSuffix()
	fillLabels := make(map[string]string, len(labels))
	for k, v := range labels {
		if k != snapshots.LabelSnapshotRef {
			fillLabels[k] = v
		}
	}
	mounts, err := s.create(ctx, snapshots.KindActive, tmp, parent, []snapshots.Opt{snapshots.WithLabels(fillLabels)})
	if err != nil {
		return false, err
	}
	failpoint.Hit(failpoint.RemoteAfterPrepare)
	// The fill snapshot is ours to remove even when the caller has gone
	// (a cancelled unpack is the usual reason a fill fails): on the
	// caller's context a busy device's retries would stop at once and
	// leave it behind.
	cleanupCtx := context.WithoutCancel(ctx)
	if err := s.extractInto(ctx, mounts, blob, diffID, fill); err != nil {
		if rmErr := s.Remove(cleanupCtx, tmp); rmErr != nil {
			log.G(ctx).WithError(rmErr).Warnf("removing failed remote fill %q", tmp)
		}
		return false, err
	}
	failpoint.Hit(failpoint.RemoteAfterExtract)
	// The committed snapshot carries the ref label: that is how
	// containerd's metadata layer finds it after ErrAlreadyExists.
	if err := s.Commit(ctx, name, tmp, snapshots.WithLabels(labels)); err != nil {
		if rmErr := s.Remove(cleanupCtx, tmp); rmErr != nil {
			log.G(ctx).WithError(rmErr).Warnf("removing uncommitted remote fill %q", tmp)
		}
		if errdefs.IsAlreadyExists(err) {
			return false, nil // a concurrent fill won
		}
		return false, err
	}
	log.G(ctx).Debugf("layer filled from the remote store as %q", name)
	return true, nil
}

var errNotRemote = errors.New("layer not in the remote store")

// extractInto applies the layer to a fresh snapshot, mounted nosuid,nodev
// and flushed before it can be committed, and records the fill.
func (s *Snapshotter) extractInto(ctx context.Context, mounts []mount.Mount, blob io.Reader, diffID string, fill *metrics.Fill) (err error) {
	var res extract.Result
	defer func() { fill.Done(res, err) }()
	opts := s.cfg.Extract
	opts.Mode = extract.Layer
	opts.ExpectedDiffID = diffID
	opts.Warn = func(w string) { log.G(ctx).Warn(w) }
	opts.Progress = fill.Progress
	return fillmount.With(s.cfg.MountDir, mounts, func(dir string) (err error) {
		failpoint.Hit(failpoint.RemoteMounted)
		res, err = extract.Extract(ctx, blob, dir, opts)
		return err
	})
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// remoteCandidate reports whether a Prepare is containerd's unpacker
// asking for a layer the remote store may hold.
func (s *Snapshotter) remoteCandidate(kind snapshots.Kind, labels map[string]string) bool {
	return s.cfg.Remote != nil && kind == snapshots.KindActive && labels[snapshots.LabelSnapshotRef] != ""
}
