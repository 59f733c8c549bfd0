package snapshotter

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/metadata"
)

// A snapshot prepared before pool trouble is never committed (trouble.go):
// its writes may have failed in writeback with nobody told. For a layer
// being unpacked that costs nothing, a retried pull writes it again. A
// container's writable layer cannot be written again, and refusing its
// Commit for good leaves the operator no way out. AcceptLostWrites is the
// way out, and only an operator's: for one snapshot it raises the
// generation the snapshot's writes are judged against to the one the
// operator names, after which Commit judges it as if prepared then. It
// is logged and recorded on the snapshot (and on the committed snapshot
// after it), and it accepts nothing after that generation: trouble
// after it, or the pool in trouble when Commit looks, still refuses.

// LostWritesAccepted is what AcceptLostWrites did.
type LostWritesAccepted struct {
	Key string
	// From and To are the snapshot's trouble generation before and
	// after; Generation is the pool's. StillRefused is set when the pool
	// had trouble after To: Commit still refuses the snapshot.
	From, To, Generation uint64
	StillRefused         bool
	// Reasons are the accepted troubles' reasons, as far as the record
	// keeps them (metadata.MaxTroubleHistory).
	Reasons []string
}

// AcceptLostWrites lets the active snapshot key be committed although the
// pool had trouble of generations up to gen after it was prepared. The
// pool must be healthy now. Snapshots that a retry makes again (layer
// unpacks, process-image imports, remote fills) are refused: retry them.
func (s *Snapshotter) AcceptLostWrites(ctx context.Context, key string, gen uint64) (LostWritesAccepted, error) {
	res := LostWritesAccepted{Key: key, To: gen}
	ctx = withSnapshot(ctx, key, "")
	if gen == 0 {
		return res, fmt.Errorf("accept lost writes of %q: give the trouble generation Commit's refusal named (\"trouble generation N\"): %w", key, errdefs.ErrInvalidArgument)
	}
	if p := purposeOf(key); p != purposeWritable {
		return res, fmt.Errorf("accept lost writes of %q: not accepted for a snapshot a retry makes again: %s: %w", key, retryAdvice(p, key), errdefs.ErrFailedPrecondition)
	}
	unlock, err := s.keys.lock(ctx, key)
	if err != nil {
		return res, fmt.Errorf("accept lost writes of %q: %w", key, err)
	}
	defer unlock()
	// Trouble not on record yet is recorded first, so that it is after
	// gen, not accepted with it.
	_, now, err := s.observeTrouble(ctx)
	if err != nil {
		return res, fmt.Errorf("accept lost writes of %q: cannot read the pool's state: %w", key, err)
	}
	if now != "" {
		return res, fmt.Errorf("accept lost writes of %q: pool %q is %s now; a Commit would be refused anyway. %s: %w",
			key, s.pool.Name(), now, causeAdvice("pool "+now, false), errdefs.ErrFailedPrecondition)
	}
	err = s.store.Update(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot(key)
		if err != nil {
			return err
		}
		if rec.Kind != snapshots.KindActive || rec.State != metadata.SnapshotReady {
			return fmt.Errorf("snapshot is %s %s, not a ready active snapshot: %w", rec.State, rec.Kind, errdefs.ErrFailedPrecondition)
		}
		pt, err := tx.PoolTrouble()
		if err != nil {
			return err
		}
		res.From, res.Generation = rec.TroubleGen, pt.Generation
		if gen > pt.Generation {
			return fmt.Errorf("the pool's trouble generation is %d, not %d: %w", pt.Generation, gen, errdefs.ErrInvalidArgument)
		}
		if rec.TroubleGen >= gen {
			return fmt.Errorf("the snapshot's generation is %d already: its Commit is not refused for trouble up to %d (pool's generation %d): %w",
				rec.TroubleGen, gen, pt.Generation, errdefs.ErrFailedPrecondition)
		}
		for _, e := range pt.Recent {
			if e.Generation > rec.TroubleGen && e.Generation <= gen {
				res.Reasons = append(res.Reasons, fmt.Sprintf("generation %d: %s at %s", e.Generation, e.Reason, e.At.Format(time.RFC3339)))
			}
		}
		rec.LostWritesAccepted = &metadata.LostWritesAcceptance{From: rec.TroubleGen, To: gen, At: time.Now().UTC(), Reasons: res.Reasons}
		rec.TroubleGen = gen
		res.StillRefused = pt.Refuses(rec)
		return tx.PutSnapshot(rec)
	})
	if err != nil {
		return res, fmt.Errorf("accept lost writes of %q: %w", key, err)
	}
	log.G(ctx).Warnf("operator accepted that the writes of snapshot %q may have been lost to pool trouble (generations %d to %d: %v): its Commit is no longer refused for them",
		key, res.From+1, res.To, res.Reasons)
	return res, nil
}
