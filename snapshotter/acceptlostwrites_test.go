package snapshotter

import (
	"context"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// TestAcceptLostWritesCommitsOneSnapshot is the way out for a container
// snapshot prepared before trouble: the operator accepts the trouble up
// to the generation the refusal named, for that one snapshot, and its
// Commit goes through, marked; another snapshot is still refused, and so
// is trouble after the accepted generation.
func TestAcceptLostWritesCommitsOneSnapshot(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	const c1, c2 = "default/4/c1", "default/5/c2"
	for _, k := range []string{c1, c2} {
		if _, err := s.Prepare(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
	wantRefused(t, s, s.Commit(ctx, "default/6/img1", c1), c1, "trouble generation 1, the snapshot's 0")

	for _, tc := range []struct {
		gen  uint64
		kind func(error) bool
	}{{0, errdefs.IsInvalidArgument}, {2, errdefs.IsInvalidArgument}} {
		if _, err := s.AcceptLostWrites(ctx, c1, tc.gen); !tc.kind(err) {
			t.Errorf("accept up to generation %d: %v, want it refused", tc.gen, err)
		}
	}
	res, err := s.AcceptLostWrites(ctx, c1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 0 || res.To != 1 || res.Generation != 1 || res.StillRefused || len(res.Reasons) != 1 {
		t.Errorf("accepted = %+v", res)
	}
	if _, err := s.AcceptLostWrites(ctx, c1, 1); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("accepting again: %v, want FailedPrecondition (nothing to accept)", err)
	}
	if err := s.Commit(ctx, "default/6/img1", c1); err != nil {
		t.Fatalf("commit after the acceptance: %v", err)
	}
	store.View(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot("default/6/img1")
		if err != nil || rec.LostWritesAccepted == nil || rec.LostWritesAccepted.To != 1 {
			t.Errorf("committed record %+v, %v: want it marked accepted", rec, err)
		}
		return nil
	})
	// One snapshot only.
	wantRefused(t, s, s.Commit(ctx, "default/7/img2", c2), c2, "trouble generation 1")
	// Trouble after the accepted generation refuses again.
	if _, err := s.AcceptLostWrites(ctx, c2, 1); err != nil {
		t.Fatal(err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
	wantRefused(t, s, s.Commit(ctx, "default/7/img2", c2), c2, "trouble generation 2, the snapshot's 1")
	checkConsistent(t, s, pool)
}

// TestAcceptLostWritesRefusals: not while the pool is in trouble (a
// Commit would be refused anyway and the trouble is not over), not for
// snapshots a retry makes again, not for what is not active.
func TestAcceptLostWritesRefusals(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	const unpack, c = "default/3/extract-1 sha256:abc", "default/4/c"
	for _, k := range []string{unpack, c} {
		if _, err := s.Prepare(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
	if _, _, err := s.observeTrouble(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{unpack, "flyio-import-r1", "remote-fill/sha256:abc/0123"} {
		if _, err := s.AcceptLostWrites(ctx, k, 1); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("accept for %q: %v, want FailedPrecondition (retry it)", k, err)
		}
	}
	if _, err := s.AcceptLostWrites(ctx, "default/8/nosuch", 1); !errdefs.IsNotFound(err) {
		t.Errorf("accept for a missing snapshot: %v, want NotFound", err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.ReadOnly = true })
	if _, err := s.AcceptLostWrites(ctx, c, 1); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("accept with the pool read-only: %v, want FailedPrecondition", err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.ReadOnly = false })
	// The read-only spell is generation 2: accepting 1 leaves it refused.
	res, err := s.AcceptLostWrites(ctx, c, 1)
	if err != nil || !res.StillRefused {
		t.Errorf("accept 1 of 2: %+v, %v; want it still refused", res, err)
	}
	wantRefused(t, s, s.Commit(ctx, "default/9/img", c), c, "read-only")
}
