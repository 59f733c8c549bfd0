package snapshotter

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/metadata"
)

// TestRemoveLeavesDMWorkToCleanup is issue 10 B11: containerd calls
// Remove holding its exclusive GC lock, so Remove must not wait for the dm
// work (a busy device's deactivation retries for seconds). The device's
// deactivation is held up here until the test lets it go: Remove must
// return before it, leaving the snapshot gone and its device marked
// deleting (so its id is not reused); Cleanup then deletes the device.
func TestRemoveLeavesDMWorkToCleanup(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	var id uint32
	store.View(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot("c")
		if err == nil {
			id = rec.DeviceID
		}
		return err
	})
	release := make(chan struct{})
	var entered, left atomic.Bool
	pool.hooks["deactivate"] = func() {
		entered.Store(true)
		// Not a timing assertion: this only unblocks a Remove that does
		// the dm work itself, so that the test fails instead of hanging.
		select {
		case <-release:
		case <-time.After(time.Minute):
		}
		left.Store(true)
	}
	if err := s.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if left.Load() {
		t.Fatal("Remove returned only after the device's deactivation: it did the dm work under containerd's lock")
	}
	if _, err := s.Stat(ctx, "c"); !errdefs.IsNotFound(err) {
		t.Errorf("Stat after Remove: %v, want not found", err)
	}
	store.View(func(tx *metadata.Tx) error {
		d, err := tx.Device(id)
		if err != nil || d.State != metadata.DeviceDeleting {
			t.Errorf("device %d after Remove: %+v, %v; want it kept, marked deleting", id, d, err)
		}
		return nil
	})
	// A marked device's id is never handed out again while it exists.
	if _, err := s.Prepare(ctx, "d", ""); err != nil {
		t.Fatal(err)
	}
	store.View(func(tx *metadata.Tx) error {
		if rec, err := tx.Snapshot("d"); err == nil && rec.DeviceID == id {
			t.Errorf("new snapshot d got the marked device's id %d", id)
		}
		return nil
	})
	close(release)
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if !entered.Load() {
		t.Error("the marked device was never deactivated")
	}
	store.View(func(tx *metadata.Tx) error {
		if d, err := tx.Device(id); !errdefs.IsNotFound(err) {
			t.Errorf("device %d after Cleanup: %+v, %v; want it forgotten", id, d, err)
		}
		return nil
	})
	pool.mu.Lock()
	_, still := pool.thins[id]
	pool.mu.Unlock()
	if still {
		t.Errorf("thin %d still in the pool after Cleanup", id)
	}
}

// openingPool is the fake pool that knows devices' open counts, as
// *dmpool.Pool does.
type openingPool struct {
	*fakePool
	open map[string]int32
}

func (p openingPool) OpenCount(name string) (int32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open[name], nil
}

// TestRemoveRefusesAnOpenDevice: a snapshot whose device is open (still
// mounted, or attached by a VMM) keeps its record and device; Remove
// refused it when it did the dm work inline, and the mark-and-reap Remove
// must too, or a caller that misjudged it unused loses it.
func TestRemoveRefusesAnOpenDevice(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	fp := newFakePool()
	pool := openingPool{fakePool: fp, open: map[string]int32{}}
	s, err := New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.format = func(context.Context, string, string) error { return nil }
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := store.View(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot("a")
		if err != nil {
			return err
		}
		d, err := tx.Device(rec.DeviceID)
		name = d.Name
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fp.mu.Lock()
	pool.open[name] = 1
	fp.mu.Unlock()
	if err := s.Remove(ctx, "a"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "open") {
		t.Fatalf("Remove of a snapshot whose device is open: %v, want FailedPrecondition naming it open", err)
	}
	if _, err := s.Stat(ctx, "a"); err != nil {
		t.Fatalf("after the refusal: %v", err)
	}
	fp.mu.Lock()
	pool.open[name] = 0
	fp.mu.Unlock()
	if err := s.Remove(ctx, "a"); err != nil {
		t.Fatalf("Remove once closed: %v", err)
	}
}
