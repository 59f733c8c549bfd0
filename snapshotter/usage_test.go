package snapshotter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
)

// TestUsageIsExclusiveAndCached: Usage reports what the pool says a
// device does not share with its origin, reads the pool once for every
// snapshot, records a committed snapshot's figure for good, refreshes an
// active one only when it is older than maxAge, and falls back to mapped
// bytes when the pool cannot tell.
func TestUsageIsExclusiveAndCached(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	now := time.Unix(1000, 0)
	s.usage.now = func() time.Time { return now }
	exclusive := map[uint32]uint64{} // device -> blocks of 1 MiB
	var reads int
	var asked [][]thinmeta.Pair
	var fail error
	s.readExclusive = func(_ context.Context, pairs []thinmeta.Pair) (*thinmeta.Usage, error) {
		reads++
		asked = append(asked, pairs)
		if fail != nil {
			return nil, fail
		}
		u := &thinmeta.Usage{DataBlockSize: 1 << 20, Devices: map[uint32]thinmeta.Exclusive{}}
		for _, p := range pairs {
			u.Devices[p.Device] = thinmeta.Exclusive{Blocks: exclusive[p.Device], OriginFound: p.HasOrigin}
		}
		return u, nil
	}
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "b", "base"); err != nil {
		t.Fatal(err)
	}
	base, b := recordOf(t, s, "base"), recordOf(t, s, "b")
	pool.mu.Lock()
	pool.thins[b.DeviceID] = 100 << 20 // parent's blocks included
	pool.mu.Unlock()
	exclusive[base.DeviceID], exclusive[b.DeviceID] = 7, 3

	if u, err := s.Usage(ctx, "b"); err != nil || u.Size != 3<<20 {
		t.Fatalf("usage of b: %+v, %v; want 3 MiB", u, err)
	}
	if reads != 1 || len(asked[0]) != 2 {
		t.Fatalf("%d reads asking %+v; want one read for b and base", reads, asked)
	}
	for _, p := range asked[0] {
		if p.Device == b.DeviceID && (!p.HasOrigin || p.Origin != base.DeviceID) {
			t.Errorf("b asked with origin %+v, want base's device %d", p, base.DeviceID)
		}
	}
	// base was filled in by the same read and recorded.
	if u, err := s.Usage(ctx, "base"); err != nil || u.Size != 7<<20 || reads != 1 {
		t.Fatalf("usage of base: %+v, %v after %d reads; want 7 MiB from the first read", u, err, reads)
	}
	if r := recordOf(t, s, "base"); r.ExclusiveBytes == nil || *r.ExclusiveBytes != 7<<20 {
		t.Fatalf("base's record: %v, want 7 MiB recorded", r.ExclusiveBytes)
	}

	// b writes more: still the cached figure within maxAge, the new one after.
	exclusive[b.DeviceID] = 5
	now = now.Add(usageMaxAge - time.Second)
	if u, _ := s.Usage(ctx, "b"); u.Size != 3<<20 || reads != 1 {
		t.Fatalf("within maxAge: %+v after %d reads, want the cached 3 MiB", u, reads)
	}
	now = now.Add(2 * time.Second)
	if u, _ := s.Usage(ctx, "b"); u.Size != 5<<20 || reads != 2 {
		t.Fatalf("after maxAge: %+v after %d reads, want 5 MiB from a second read", u, reads)
	}
	if len(asked[1]) != 1 {
		t.Errorf("second read asked %+v: a recorded committed snapshot is not read again", asked[1])
	}
	// base keeps its figure without any read.
	now = now.Add(time.Hour)
	fail = errors.New("metadata snapshot held")
	if u, _ := s.Usage(ctx, "base"); u.Size != 7<<20 || reads != 2 {
		t.Fatalf("base: %+v after %d reads", u, reads)
	}
	// The pool cannot tell: the last good figure, stale, not b's
	// mapped bytes with its parent's (kubelet could evict on the jump),
	// and no new read before maxAge.
	if u, err := s.Usage(ctx, "b"); err != nil || u.Size != 5<<20 || reads != 3 {
		t.Fatalf("failed read: %+v, %v after %d reads; want the last good 5 MiB", u, err, reads)
	}
	if u, _ := s.Usage(ctx, "b"); u.Size != 5<<20 || reads != 3 {
		t.Fatalf("failed read again: %+v after %d reads; want no new read", u, reads)
	}

	// A device the pool does not have: mapped bytes, and no new read
	// for it before maxAge either.
	fail = nil
	now = now.Add(time.Hour)
	delete(exclusive, b.DeviceID)
	missing := s.readExclusive
	s.readExclusive = func(ctx context.Context, pairs []thinmeta.Pair) (*thinmeta.Usage, error) {
		u, err := missing(ctx, pairs)
		if u != nil {
			delete(u.Devices, b.DeviceID)
		}
		return u, err
	}
	for i := 0; i < 2; i++ {
		if u, err := s.Usage(ctx, "b"); err != nil || u.Size != 100<<20 || reads != 4 {
			t.Fatalf("device not in the pool, call %d: %+v, %v after %d reads; want mapped bytes from one read", i, u, err, reads)
		}
	}
}

// A device no good read has seen falls back to its mapped bytes after a
// failed read; and a snapshot newer than the last read does not make a
// read before maxAge: its mapped bytes meanwhile.
func TestUsageNeverReadDeviceAndNewSnapshots(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	now := time.Unix(1000, 0)
	s.usage.now = func() time.Time { return now }
	var reads int
	var fail error
	s.readExclusive = func(_ context.Context, pairs []thinmeta.Pair) (*thinmeta.Usage, error) {
		reads++
		if fail != nil {
			return nil, fail
		}
		u := &thinmeta.Usage{DataBlockSize: 1 << 20, Devices: map[uint32]thinmeta.Exclusive{}}
		for _, p := range pairs {
			u.Devices[p.Device] = thinmeta.Exclusive{Blocks: 1}
		}
		return u, nil
	}
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	setMapped(s, pool, "a", 50<<20)
	fail = errors.New("metadata snapshot held")
	if u, err := s.Usage(ctx, "a"); err != nil || u.Size != 50<<20 || reads != 1 {
		t.Fatalf("never read: %+v, %v after %d reads; want mapped 50 MiB", u, err, reads)
	}
	fail = nil
	now = now.Add(usageMaxAge)
	if u, _ := s.Usage(ctx, "a"); u.Size != 1<<20 || reads != 2 {
		t.Fatalf("read: %+v after %d reads; want 1 MiB", u, reads)
	}
	for i := 0; i < 3; i++ {
		key := string(rune('b' + i))
		if _, err := s.Prepare(ctx, key, ""); err != nil {
			t.Fatal(err)
		}
		setMapped(s, pool, key, 60<<20)
		now = now.Add(time.Second)
		if u, err := s.Usage(ctx, key); err != nil || u.Size != 60<<20 || reads != 2 {
			t.Fatalf("new snapshot %s: %+v, %v after %d reads; want mapped 60 MiB and no read", key, u, err, reads)
		}
	}
	now = now.Add(usageMaxAge)
	if u, _ := s.Usage(ctx, "d"); u.Size != 1<<20 || reads != 3 {
		t.Fatalf("after maxAge: %+v after %d reads; want 1 MiB from one more read", u, reads)
	}
}

// While one caller reads the pool, the others answer at once from the
// figures they have (mapped bytes for a device never read) instead of
// waiting; a caller whose ctx ends while the cache is locked gets ctx's
// error.
func TestUsageDoesNotWaitForARead(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	now := time.Unix(1000, 0)
	s.usage.now = func() time.Time { return now }
	entered, release := make(chan struct{}), make(chan struct{})
	var reads int
	s.readExclusive = func(_ context.Context, pairs []thinmeta.Pair) (*thinmeta.Usage, error) {
		reads++
		if reads == 2 {
			close(entered)
			<-release
		}
		u := &thinmeta.Usage{DataBlockSize: 1 << 20, Devices: map[uint32]thinmeta.Exclusive{}}
		for _, p := range pairs {
			u.Devices[p.Device] = thinmeta.Exclusive{Blocks: uint64(reads)}
		}
		return u, nil
	}
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	setMapped(s, pool, "a", 50<<20)
	if u, _ := s.Usage(ctx, "a"); u.Size != 1<<20 {
		t.Fatalf("first read: %+v", u)
	}
	now = now.Add(usageMaxAge)
	done := make(chan error)
	go func() { _, err := s.Usage(ctx, "a"); done <- err }()
	<-entered
	// The read is hung: answered from the cache, no second read.
	if u, err := s.Usage(ctx, "a"); err != nil || u.Size != 1<<20 || reads != 2 {
		t.Fatalf("during a read: %+v, %v after %d reads; want the cached 1 MiB", u, err, reads)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if u, _ := s.Usage(ctx, "a"); u.Size != 2<<20 || reads != 2 {
		t.Fatalf("after the read: %+v after %d reads", u, reads)
	}
	s.usage.sem <- struct{}{}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Usage(cctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cache locked, ctx cancelled: %v", err)
	}
	<-s.usage.sem
}

func setMapped(s *Snapshotter, pool *fakePool, key string, b uint64) {
	id := recordOfNoT(s, key).DeviceID
	pool.mu.Lock()
	pool.thins[id] = b
	pool.mu.Unlock()
}

func recordOfNoT(s *Snapshotter, key string) *metadata.Snapshot {
	var rec *metadata.Snapshot
	_ = s.store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot(key); return err })
	return rec
}

func recordOf(t *testing.T, s *Snapshotter, key string) *metadata.Snapshot {
	t.Helper()
	var rec *metadata.Snapshot
	if err := s.store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot(key); return err }); err != nil {
		t.Fatal(err)
	}
	return rec
}

// containerd's CRI asks a committed snapshot's usage once and keeps the
// answer (its snapshots syncer), so a layer committed after the last read
// must not be answered with its mapped bytes, which count its parents'
// and the template's blocks: the image filesystem's figure then exceeded
// the pool's data for good (TestCRIPodLifecycle under load). Its first
// Usage reads at once, and only once.
func TestUsageOfANewCommittedSnapshotIsReadAtOnce(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	now := time.Unix(1000, 0)
	s.usage.now = func() time.Time { return now }
	var reads int
	s.readExclusive = func(_ context.Context, pairs []thinmeta.Pair) (*thinmeta.Usage, error) {
		reads++
		u := &thinmeta.Usage{DataBlockSize: 1 << 20, Devices: map[uint32]thinmeta.Exclusive{}}
		for _, p := range pairs {
			u.Devices[p.Device] = thinmeta.Exclusive{Blocks: 2}
		}
		return u, nil
	}
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if u, err := s.Usage(ctx, "a"); err != nil || u.Size != 2<<20 || reads != 1 {
		t.Fatalf("first read: %+v, %v after %d reads", u, err, reads)
	}
	if _, err := s.Prepare(ctx, "layer-active", ""); err != nil {
		t.Fatal(err)
	}
	setMapped(s, pool, "layer-active", 70<<20)
	if err := s.Commit(ctx, "layer", "layer-active"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if u, err := s.Usage(ctx, "layer"); err != nil || u.Size != 2<<20 || reads != 2 {
		t.Fatalf("new committed snapshot: %+v, %v after %d reads; want 2 MiB from one read now, not its mapped bytes", u, err, reads)
	}
	if u, err := s.Usage(ctx, "layer"); err != nil || u.Size != 2<<20 || reads != 2 {
		t.Fatalf("again: %+v, %v after %d reads; want the recorded figure, no read", u, err, reads)
	}
	// An active snapshot newer than the last read still waits for maxAge.
	if _, err := s.Prepare(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
	setMapped(s, pool, "b", 60<<20)
	if u, _ := s.Usage(ctx, "b"); u.Size != 60<<20 || reads != 2 {
		t.Fatalf("new active snapshot: %+v after %d reads; want mapped bytes, no read", u, reads)
	}
}
