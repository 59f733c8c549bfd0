package daemon

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/metadata"
)

// TestStatusShowsPoolTrouble: status carries the trouble generation, its
// latest reason and time, and how many active snapshots Commit would
// refuse: those prepared before the latest trouble, and every active one
// while the pool is in trouble.
func TestStatusShowsPoolTrouble(t *testing.T) {
	store, err := metadata.Open(filepath.Join(t.TempDir(), "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	at := time.Date(2026, 12, 2, 1, 39, 33, 0, time.UTC)
	err = store.Update(func(tx *metadata.Tx) error {
		var pt metadata.PoolTrouble
		pt.Bump("pool read-only", at.Add(-time.Hour))
		pt.Bump("pool out of data space", at)
		if err := tx.PutPoolTrouble(pt); err != nil {
			return err
		}
		for i, s := range []*metadata.Snapshot{
			{Key: "default/1/extract-1 sha256:a", Kind: snapshots.KindActive, TroubleGen: 0},
			{Key: "default/2/c", Kind: snapshots.KindActive, TroubleGen: 1},
			{Key: "default/3/d", Kind: snapshots.KindActive, TroubleGen: 2},
			{Key: "default/4/layer", Kind: snapshots.KindCommitted},
			{Key: "default/5/view", Kind: snapshots.KindView},
		} {
			s.DeviceID = uint32(i + 1)
			if err := tx.CreateSnapshot(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode    string
		refused int
	}{{"", 2}, {"read-only", 3}} {
		store.View(func(tx *metadata.Tx) error {
			got, err := poolTroubleStatus(tx, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			if got.Generation != 2 || got.LastReason != "pool out of data space" || got.LastAt == nil || !got.LastAt.Equal(at) || got.RefusedAtCommit != tc.refused {
				t.Errorf("pool %q: trouble = %+v (at %v), want generation 2, the out of space at %v, %d refused", tc.mode, got, got.LastAt, at, tc.refused)
			}
			return nil
		})
	}
}
