package snapshotter

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// lockedBuffer is a log sink the background reaper may write to while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func loggingContext() (context.Context, *lockedBuffer) {
	var buf lockedBuffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.DebugLevel)
	return log.WithLogger(context.Background(), logrus.NewEntry(l)), &buf
}

// deviceOf is the thin id of snapshot key.
func deviceOf(t *testing.T, store *metadata.Store, key string) uint32 {
	t.Helper()
	var id uint32
	if err := store.View(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot(key)
		if err == nil {
			id = rec.DeviceID
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func deviceForgotten(store *metadata.Store, id uint32) bool {
	var gone bool
	store.View(func(tx *metadata.Tx) error {
		_, err := tx.Device(id)
		gone = errdefs.IsNotFound(err)
		return nil
	})
	return gone
}

// TestReaperRetriesFailedDeletion: a removed snapshot's device that stays
// busy through the reaper's pass is retried in the background with a
// backoff, without waiting for containerd's next Cleanup, and deleted once
// it is free; the failure is warned about once, not at every retry.
func TestReaperRetriesFailedDeletion(t *testing.T) {
	ctx, logs := loggingContext()
	s, pool, store := newTestSnapshotter(t)
	s.reapRetry = reapRetry{first: 5 * time.Millisecond, max: 20 * time.Millisecond, attempts: 1000}
	if _, err := s.Prepare(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	id := deviceOf(t, store, "c")
	pool.setFailing("delete", fmt.Errorf("thin %d: %w", id, dmpool.ErrDeviceBusy))
	before := pool.callCount("delete")
	if err := s.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three attempts at deleting the busy device (no Cleanup called)", func() bool { return pool.callCount("delete")-before >= 3 })
	pool.setFailing("delete", nil)
	waitFor(t, "the device deleted once free", func() bool { return deviceForgotten(store, id) })
	pool.mu.Lock()
	_, still := pool.thins[id]
	pool.mu.Unlock()
	if still {
		t.Errorf("thin %d still in the pool", id)
	}
	s.Close()
	if n := strings.Count(logs.String(), "could not delete a removed snapshot's device"); n != 1 {
		t.Errorf("the failure was warned about %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "deleted after") {
		t.Errorf("no line says the device was deleted in the end:\n%s", logs.String())
	}
}

// TestCleanupGivenUpIsRetried: containerd's Cleanup whose context ended
// before the devices were deleted still leaves them to the background
// retries, which do not end with that context.
func TestCleanupGivenUpIsRetried(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	s.reapRetry = reapRetry{first: 5 * time.Millisecond, max: 5 * time.Millisecond, attempts: 100}
	if _, err := s.Prepare(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	id := deviceOf(t, store, "c")
	// Marked as Remove marks, without Remove's reaper pass.
	if err := store.Update(func(tx *metadata.Tx) error {
		if err := tx.DeleteSnapshot("c"); err != nil {
			return err
		}
		return markDevice(tx, id, metadata.DeviceDeleting, nil)
	}); err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Cleanup(gone); err == nil {
		t.Fatal("Cleanup on an ended context reported success")
	}
	waitFor(t, "the device deleted by the background retries", func() bool { return deviceForgotten(store, id) })
	pool.mu.Lock()
	_, still := pool.thins[id]
	pool.mu.Unlock()
	if still {
		t.Errorf("thin %d still in the pool", id)
	}
}

// TestReaperRetriesAreBounded: a device that never frees up is retried a
// bounded number of times, then left to Cleanup and the next start.
func TestReaperRetriesAreBounded(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	s.reapRetry = reapRetry{first: time.Millisecond, max: 2 * time.Millisecond, attempts: 3}
	if _, err := s.Prepare(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	id := deviceOf(t, store, "c")
	pool.setFailing("delete", fmt.Errorf("thin %d: %w", id, dmpool.ErrDeviceBusy))
	before := pool.callCount("delete")
	if err := s.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retries to start", func() bool { return pool.callCount("delete")-before >= 2 })
	waitFor(t, "the retries to give up", func() bool { return !s.reapRetrying.Load() })
	time.Sleep(20 * time.Millisecond)
	if n := pool.callCount("delete") - before; n != 4 {
		t.Errorf("%d deletion attempts, want 4 (the reaper's and 3 retries)", n)
	}
	if deviceForgotten(store, id) {
		t.Fatal("device forgotten although never deleted")
	}
	// Cleanup still retries, and the device goes once it is free.
	pool.setFailing("delete", nil)
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if !deviceForgotten(store, id) {
		t.Error("device kept after a successful Cleanup")
	}
}

// TestReaperRetriesTouchOnlyMarkedDevices: a retry reads the records again
// and leaves alone a device that is no longer marked deleting.
func TestReaperRetriesTouchOnlyMarkedDevices(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	s.reapRetry = reapRetry{first: 20 * time.Millisecond, max: 20 * time.Millisecond, attempts: 3}
	if _, err := s.Prepare(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	id := deviceOf(t, store, "c")
	pool.setFailing("delete", fmt.Errorf("thin %d: %w", id, dmpool.ErrDeviceBusy))
	if err := s.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first failed deletion", func() bool { return s.reapRetrying.Load() })
	// Whatever unmarked it (nothing does today), the device is not
	// deleting any more when the retry runs.
	if err := store.Update(func(tx *metadata.Tx) error { return markDevice(tx, id, metadata.DeviceQuarantined, nil) }); err != nil {
		t.Fatal(err)
	}
	pool.setFailing("delete", nil)
	calls := pool.callCount("delete") + pool.callCount("deactivate")
	waitFor(t, "the retries to end", func() bool { return !s.reapRetrying.Load() })
	if n := pool.callCount("delete") + pool.callCount("deactivate"); n != calls {
		t.Errorf("%d dm calls on a device no longer marked deleting", n-calls)
	}
	pool.mu.Lock()
	_, still := pool.thins[id]
	pool.mu.Unlock()
	if !still || deviceForgotten(store, id) {
		t.Error("a device no longer marked deleting was deleted")
	}
}

// busyPool is the fake pool whose Deactivate of a removed snapshot's
// device keeps retrying EBUSY until its context ends, as dmpool's does
// for a device held open.
type busyPool struct {
	*fakePool
	busy    atomic.Bool
	entered atomic.Int32
}

func (p *busyPool) Deactivate(ctx context.Context, name string) error {
	if !p.busy.Load() {
		return p.fakePool.Deactivate(ctx, name)
	}
	p.entered.Add(1)
	select {
	case <-ctx.Done():
		return fmt.Errorf("remove %q: %w: %w", name, dmpool.ErrDeviceBusy, ctx.Err())
	case <-time.After(20 * time.Second):
		return fmt.Errorf("remove %q: %w", name, dmpool.ErrDeviceBusy)
	}
}

// TestCloseStopsTheReaper: Close does not wait for the reaper's retries
// of busy devices: it cancels them, and the devices stay marked deleting
// for the next start, their record not blaming the shutdown.
func TestCloseStopsTheReaper(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	pool := &busyPool{fakePool: newFakePool()}
	s, err := New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.format = func(context.Context, string, string) error { return nil }
	var ids []uint32
	for i := range 3 {
		key := fmt.Sprint("c", i)
		if _, err := s.Prepare(ctx, key, ""); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, deviceOf(t, store, key))
	}
	pool.busy.Store(true)
	for i := range 3 {
		if err := s.Remove(ctx, fmt.Sprint("c", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the reaper at a busy device", func() bool { return pool.entered.Load() > 0 })
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with busy devices being reaped, want it prompt", d)
	}
	store.View(func(tx *metadata.Tx) error {
		for _, id := range ids {
			d, err := tx.Device(id)
			if err != nil || d.State != metadata.DeviceDeleting {
				t.Errorf("device %d after Close: %+v, %v; want it still marked deleting", id, d, err)
			} else if strings.Contains(d.Error, "context canceled") {
				t.Errorf("device %d's record blames the shutdown: %q", id, d.Error)
			}
		}
		return nil
	})
}

// TestNoBackgroundWorkAfterClose: a call the daemon's drain abandoned may
// still run while Close waits for the background work; it must not add
// to it (a WaitGroup growing from zero during Wait panics), and it leaves
// the reaper ready for the next start.
func TestNoBackgroundWorkAfterClose(t *testing.T) {
	s, _, _ := newTestSnapshotter(t)
	s.Close()
	ran := false
	if s.goBackground(func() { ran = true }) || ran {
		t.Fatal("background work started after Close")
	}
	s.kickReaper(context.Background())
	if s.reapQueued.Load() {
		t.Error("a reaper pass that cannot run is left queued")
	}
	s.retryReapLater(context.Background())
	if s.reapRetrying.Load() {
		t.Error("retries that cannot run are left marked running")
	}
}
