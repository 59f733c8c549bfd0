package snapshotter

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Layers filled in the background that no namespace has adopted yet.
//
// A Prepare that stops waiting for a remote fill leaves its layer to
// containerd (remotefill.go), and the fill goes on to commit
// remoteName(ref) for the next Prepare of that layer (a re-pull, another
// namespace) to adopt, so that S3 is read once. Until then no namespace
// refers to that snapshot, and containerd's garbage collection removes
// every backend snapshot its metadata does not name: it walks the
// snapshotter without a filter and removes what it does not know
// (core/metadata/snapshot.go walkTree, pruneBranch). Such a layer was
// collected at the next GC and the next pull fetched it from S3 again.
//
// So a layer a background fill committed is left out of unfiltered walks
// until a Prepare is offered it, for at most unadoptedKeep. containerd
// adopts a layer with a walk filtered on the ref label and the parent,
// right after our Prepare answered ErrAlreadyExists; such a walk shows
// the layer and ends its hiding, and from then on containerd either
// names it in a namespace or removes it at its next GC like any other.
//
// Hiding keeps a layer longer, never less long. The marks are in memory:
// after a restart every layer is visible and containerd collects those
// nobody adopted. A Remove of the parent of hidden layers (containerd's
// GC removing the image the fill built on) removes them with it, instead
// of being refused for children containerd cannot see
// (removeUnadoptedChildren): the one removal hiding causes, of layers no
// namespace names. adoptMu makes that removal and an adoption walk
// exclusive, since our own gc and delete-image call Remove without
// containerd's lock: either the walk offers the layer first (and the
// Remove is refused for a child), or the layer is gone before the walk
// (and containerd's adoption fails with not found: a pull retried, no
// snapshot lost).

// admitter is the part of the guarded pool (poolguard.go) that says
// whether it takes new work: a pool above full_threshold, read-only or
// failed does not.
type admitter interface {
	Admit(ctx context.Context, what string) error
}

// hideUnadopted says whether this unfiltered walk hides the unadopted
// layers: not when there are none, and not when the pool refuses new
// work, since then containerd's GC should collect them (they are caches
// of layers in S3) rather than the pool stay full for an hour.
func (s *Snapshotter) hideUnadopted(ctx context.Context) bool {
	s.fillsMu.Lock()
	some := len(s.unadopted) > 0
	s.fillsMu.Unlock()
	if !some {
		return true // nothing to decide; running fills stay hidden
	}
	a, ok := s.pool.(admitter)
	if !ok {
		return true
	}
	if err := a.Admit(ctx, "keeping layers filled in the background"); errors.Is(err, dmpool.ErrPoolFull) ||
		errors.Is(err, dmpool.ErrPoolReadOnly) || errors.Is(err, dmpool.ErrPoolFailed) {
		// Only these: a status that could not be read is no reason to
		// let the layers go (they would be fetched from S3 again).
		log.G(ctx).WithError(err).Info("the pool takes no new work: layers filled in the background and not adopted are left to containerd's garbage collection")
		s.fillsMu.Lock()
		clear(s.unadopted)
		s.fillsMu.Unlock()
		return false
	}
	return true
}

// unadoptedKeep is how long a layer filled in the background waits for a
// Prepare to adopt it before containerd's GC may collect it.
const unadoptedKeep = time.Hour

// unadoptedLayer reports whether key is a layer a background fill
// committed (or is committing: the fill's own Commit and the mark are
// not one step) that no Prepare was offered yet, younger than
// unadoptedKeep.
func (s *Snapshotter) unadoptedLayer(key string, now time.Time) bool {
	if !strings.HasPrefix(key, "remote/") {
		return false
	}
	s.fillsMu.Lock()
	defer s.fillsMu.Unlock()
	if _, running := s.fills[key]; running {
		return true
	}
	return s.markedLocked(key, now)
}

// markedLocked reports whether key carries a live mark; fillsMu held.
func (s *Snapshotter) markedLocked(key string, now time.Time) bool {
	at, ok := s.unadopted[key]
	if ok && now.Sub(at) >= unadoptedKeep {
		delete(s.unadopted, key)
		return false
	}
	return ok
}

// forgetUnadopted ends the hiding of keys: offered to a Prepare, or
// removed.
func (s *Snapshotter) forgetUnadopted(keys ...string) {
	s.fillsMu.Lock()
	defer s.fillsMu.Unlock()
	for _, k := range keys {
		delete(s.unadopted, k)
	}
}

// walkFilters says what a walk with filters fs does with unadopted
// layers: an unfiltered walk (containerd's GC) does not see them; a walk
// filtered on the snapshot ref label (containerd adopting a layer after
// ErrAlreadyExists) sees them and is their offer.
func walkFilters(fs []string) (unfiltered, adopting bool) {
	unfiltered = true
	for _, f := range fs {
		if strings.TrimSpace(f) != "" {
			unfiltered = false
		}
		if strings.Contains(f, snapshots.LabelSnapshotRef) {
			adopting = true
		}
	}
	return unfiltered, adopting
}

// removeUnadoptedChildren deletes, inside Remove's transaction, the
// descendants of a snapshot when every one of them is an unadopted layer:
// containerd cannot see them, so it cannot remove them first, and nobody
// uses them. It returns the keys it removed (their devices are marked
// deleting), or ok false, having changed nothing, when any descendant is
// something else: Remove is then refused as before.
//
// Anything unexpected (a record that cannot be read, a device record
// missing) refuses as well, rather than fail containerd's whole garbage
// collection: it stops at an error from Remove other than
// FailedPrecondition. The caller holds adoptMu.
func (s *Snapshotter) removeUnadoptedChildren(tx *metadata.Tx, kids []string, now time.Time) (removed []string, ok bool) {
	var recs []*metadata.Snapshot
	for len(kids) > 0 {
		k := kids[0]
		kids = kids[1:]
		if !s.hiddenCommittedLayer(k, now) {
			return nil, false
		}
		rec, err := tx.Snapshot(k)
		if err != nil || rec.Kind != snapshots.KindCommitted || rec.State != metadata.SnapshotReady {
			return nil, false
		}
		recs = append(recs, rec)
		kids = append(kids, tx.Children(k)...)
	}
	// Leaves first, as the records' parent links require. An error here
	// fails Remove's whole transaction, so nothing is half done.
	for i := len(recs) - 1; i >= 0; i-- {
		if err := tx.DeleteSnapshot(recs[i].Key); err != nil {
			return nil, false
		}
		if err := markDevice(tx, recs[i].DeviceID, metadata.DeviceDeleting, nil); err != nil {
			return nil, false
		}
		removed = append(removed, recs[i].Key)
	}
	return removed, true
}

// hiddenCommittedLayer reports whether key carries a live mark and no fill
// of it runs (a running fill's layer is not removed under it), in one
// look.
func (s *Snapshotter) hiddenCommittedLayer(key string, now time.Time) bool {
	if !strings.HasPrefix(key, "remote/") {
		return false
	}
	s.fillsMu.Lock()
	defer s.fillsMu.Unlock()
	if _, running := s.fills[key]; running {
		return false
	}
	return s.markedLocked(key, now)
}
