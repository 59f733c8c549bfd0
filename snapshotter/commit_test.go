package snapshotter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/metadata"
)

// checkConsistent fails t unless every snapshot on record has its device
// in the pool, no two snapshots share a device, active snapshots and
// views have theirs active and committed ones have theirs inactive.
func checkConsistent(t *testing.T, s *Snapshotter, pool *fakePool) {
	t.Helper()
	pool.mu.Lock()
	defer pool.mu.Unlock()
	owners := map[uint32]string{}
	s.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err != nil {
				t.Errorf("record %q: %v", key, err)
				return nil
			}
			if o, ok := owners[rec.DeviceID]; ok {
				t.Errorf("snapshots %q and %q share device %d", o, key, rec.DeviceID)
			}
			owners[rec.DeviceID] = key
			if _, ok := pool.thins[rec.DeviceID]; !ok {
				t.Errorf("snapshot %q (%s %s) has device %d, which the pool does not hold", key, rec.State, kindName(rec.Kind), rec.DeviceID)
			}
			_, active := pool.active[s.deviceName(rec.DeviceID)]
			if rec.State == metadata.SnapshotReady && (rec.Kind == snapshots.KindCommitted) == active {
				t.Errorf("snapshot %q (%s) has device %d active=%v", key, kindName(rec.Kind), rec.DeviceID, active)
			}
			return nil
		})
	})
	var ops []*metadata.Op
	s.store.View(func(tx *metadata.Tx) (err error) { ops, err = tx.Ops(); return err })
	if len(ops) > 0 {
		t.Errorf("%d operations left open, e.g. %s of %q", len(ops), ops[0].Type, ops[0].Key)
	}
}

// TestConcurrentCommitsOfOneKey commits one active snapshot under two
// names at once: exactly one commit may win, and the two names must never
// share the device.
func TestConcurrentCommitsOfOneKey(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	pool.hooks["deactivate"] = func() { close(entered); <-release }
	errA := make(chan error, 1)
	go func() { errA <- s.Commit(ctx, "one", "a") }()
	<-entered
	errB := make(chan error, 1)
	go func() { errB <- s.Commit(ctx, "two", "a") }()
	// Without serialisation B runs to completion while A waits in its
	// deactivation; with it, B waits for A.
	select {
	case err := <-errB:
		errB <- err
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	a, b := <-errA, <-errB
	if (a == nil) == (b == nil) {
		t.Fatalf("commit as one: %v; commit as two: %v; want exactly one to succeed", a, b)
	}
	if a != nil {
		t.Errorf("the first commit failed (%v), the second, which started during it, won", a)
	}
	if !errdefs.IsNotFound(b) {
		t.Errorf("second commit: %v, want not found (the key was committed)", b)
	}
	checkConsistent(t, s, pool)
}

// TestRemoveRacingCommit removes a snapshot while its Commit is in
// flight: whatever the order, no committed snapshot may be left whose
// device the Remove deleted.
func TestRemoveRacingCommit(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	commitIn, commitGo, removeGo := make(chan struct{}), make(chan struct{}), make(chan struct{})
	// The Commit stops after its first transaction, the Remove at its
	// deactivation (or, serialised, the Commit's deactivation stops).
	pool.hooks["status"] = func() { close(commitIn); <-commitGo }
	pool.hooks["deactivate"] = func() { <-removeGo }
	commitErr := make(chan error, 1)
	go func() { commitErr <- s.Commit(ctx, "c", "a") }()
	<-commitIn
	removeErr := make(chan error, 1)
	go func() { removeErr <- s.Remove(ctx, "a") }()
	time.Sleep(100 * time.Millisecond)
	close(commitGo)
	time.Sleep(100 * time.Millisecond)
	close(removeGo)
	cErr, rErr := <-commitErr, <-removeErr
	t.Logf("commit: %v; remove: %v", cErr, rErr)
	if cErr == nil && rErr == nil {
		t.Error("both the commit and the remove of one key succeeded")
	}
	checkConsistent(t, s, pool)
}

// TestCommitOptionsCheckedFirst gives Commit an option that fails: the
// snapshot must stay active with its device, no device work done.
func TestCommitOptionsCheckedFirst(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	bad := func(*snapshots.Info) error { return errors.New("injected bad option") }
	pool.hooks["status"] = func() { t.Error("Commit called the pool before checking its options") }
	if err := s.Commit(ctx, "c", "a", bad); err == nil || !strings.Contains(err.Error(), "injected bad option") {
		t.Fatalf("commit with a bad option: %v", err)
	}
	checkConsistent(t, s, pool)
	if _, err := s.Mounts(ctx, "a"); err != nil {
		t.Fatalf("snapshot after the failed commit: %v", err)
	}
	delete(pool.hooks, "status")
	if err := s.Commit(ctx, "c", "a"); err != nil {
		t.Fatalf("commit after the failed one: %v", err)
	}
	checkConsistent(t, s, pool)
}

// TestCommitRollsBack makes the rename fail after the device was
// deactivated (the name taken behind our back): the snapshot must stay
// active, ready and with its device active, and commit fine later.
func TestCommitRollsBack(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "other", ""); err != nil {
		t.Fatal(err)
	}
	pool.hooks["deactivate"] = func() {
		// Another writer of the database takes the name.
		err := store.Update(func(tx *metadata.Tx) error {
			rec, err := tx.Snapshot("other")
			if err != nil {
				return err
			}
			rec.Key = "c"
			return tx.RenameSnapshot("other", rec)
		})
		if err != nil {
			t.Error(err)
		}
	}
	if err := s.Commit(ctx, "c", "a"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("commit onto a name taken during it: %v, want already exists", err)
	}
	checkConsistent(t, s, pool)
	if _, err := s.Mounts(ctx, "a"); err != nil {
		t.Fatalf("snapshot after the failed commit: %v", err)
	}
	if err := s.Commit(ctx, "c2", "a"); err != nil {
		t.Fatalf("commit after the failed one: %v", err)
	}
	checkConsistent(t, s, pool)
}

// TestBadMaxSizeLabel gives parentless (and child) Prepares max-size
// labels dm-thin cannot take or that make no sense: each is refused with
// InvalidArgument naming the label and value, and nothing reaches the
// pool or the metadata.
func TestBadMaxSizeLabel(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	bad := []string{"16777217", "134217729", "0", "-1", "", "abc", "1e9", "0x8000000", " 134217728",
		"18446744073709551615", "99999999999999999999", "17592186044416000"}
	for _, v := range bad {
		_, err := s.Prepare(ctx, "k", "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotMaxSize: v}))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), snapshots.LabelSnapshotMaxSize) || !strings.Contains(err.Error(), `"`+v+`"`) {
			t.Errorf("max-size %q: %v, want InvalidArgument naming the label and value", v, err)
		}
	}
	if len(pool.thins) != 0 || len(pool.active) != 0 {
		t.Fatalf("bad sizes reached the pool: thins %v active %v", pool.thins, pool.active)
	}
	if _, err := s.Stat(ctx, "k"); !errdefs.IsNotFound(err) {
		t.Fatalf("a record was left: %v", err)
	}
	checkConsistent(t, s, pool)
	// A good size still works, and the 512-byte multiple is the rule.
	if _, err := s.Prepare(ctx, "k", "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotMaxSize: "16777728"})); err != nil {
		t.Fatalf("max-size 16MiB+512: %v", err)
	}
	checkConsistent(t, s, pool)
}
