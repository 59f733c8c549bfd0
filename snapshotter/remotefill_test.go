package snapshotter

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// slowRemote is a layer store whose Open blocks until release is closed
// (or the fill's context ends), like a throttled S3, and then says it has
// no such layer: the fake pool cannot mount, so these tests stop before
// the extraction (the VM test TestLayerStoreFillDoesNotBlockNode goes all
// the way).
type slowRemote struct {
	release  chan struct{}
	opens    atomic.Int32
	canceled atomic.Bool
}

func (r *slowRemote) Open(ctx context.Context, _ map[string]string) (io.ReadCloser, string, bool, error) {
	r.opens.Add(1)
	select {
	case <-r.release:
		return nil, "", false, nil
	case <-ctx.Done():
		r.canceled.Store(true)
		return nil, "", false, ctx.Err()
	}
}

func remoteLabels() snapshots.Opt {
	return snapshots.WithLabels(map[string]string{
		snapshots.LabelSnapshotRef:      testRef,
		"containerd.io/snapshot.diffid": "sha256:4567",
	})
}

// TestPrepareDoesNotWaitForSlowFill is issue 10 B6 on the fake pool: a
// Prepare of a layer whose remote fill takes longer than remote_fill_wait
// returns an ordinary snapshot (containerd's lock is held meanwhile), the
// fill goes on, and a second Prepare of the layer joins it: the layer
// store is asked once.
func TestPrepareDoesNotWaitForSlowFill(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestSnapshotter(t)
	r := &slowRemote{release: make(chan struct{})}
	s.cfg.Remote = r
	s.cfg.RemoteFillWait = 10 * time.Millisecond
	defer close(r.release)
	if _, err := s.Prepare(ctx, "unpack-1", "", remoteLabels()); err != nil {
		t.Fatalf("Prepare while the fill is slow: %v; want an ordinary snapshot", err)
	}
	if _, err := s.Prepare(ctx, "unpack-2", "", remoteLabels()); err != nil {
		t.Fatalf("second Prepare: %v", err)
	}
	if n := r.opens.Load(); n != 1 {
		t.Errorf("layer store opened %d times; the second Prepare should join the running fill", n)
	}
	if r.canceled.Load() {
		t.Error("the fill was cancelled when its Prepare stopped waiting")
	}
	for _, k := range []string{"unpack-1", "unpack-2"} {
		if info, err := s.Stat(ctx, k); err != nil || info.Kind != snapshots.KindActive {
			t.Errorf("%s: %+v, %v; want an active snapshot", k, info, err)
		}
	}
}

// TestCancelledPrepareCancelsItsFill: while no Prepare gave up on its
// deadline, the fill is its waiters' alone, and a cancelled unpack stops
// it.
func TestCancelledPrepareCancelsItsFill(t *testing.T) {
	s, _, _ := newTestSnapshotter(t)
	r := &slowRemote{release: make(chan struct{})}
	defer close(r.release)
	s.cfg.Remote = r
	s.cfg.RemoteFillWait = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, "unpack-1", "", remoteLabels())
		done <- err
	}()
	for r.opens.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("a cancelled Prepare succeeded")
	}
	s.Close() // waits for the fill's goroutine
	if !r.canceled.Load() {
		t.Error("the fill went on after its only Prepare was cancelled")
	}
}

// TestWalkHidesFillInFlight: containerd's GC, which now runs during a
// background fill, removes every backend snapshot its metadata does not
// name; Walk must not show it the snapshot a running fill writes into,
// while one a crash left behind stays visible for it to collect.
func TestWalkHidesFillInFlight(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestSnapshotter(t)
	const tmp = "remote-fill/" + testRef + "/abcdef"
	if _, err := s.Prepare(ctx, tmp, ""); err != nil {
		t.Fatal(err)
	}
	walked := func() bool {
		seen := false
		s.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
			seen = seen || i.Name == tmp
			return nil
		})
		return seen
	}
	s.fillsMu.Lock()
	s.fills[remoteName(testRef)] = &remoteFill{done: make(chan struct{})}
	s.fillsMu.Unlock()
	if walked() {
		t.Error("Walk showed the snapshot of a running fill")
	}
	s.fillsMu.Lock()
	delete(s.fills, remoteName(testRef))
	s.fillsMu.Unlock()
	if !walked() {
		t.Error("Walk hid a fill snapshot no fill is running for")
	}
}

// TestPrepareOnAnotherParentDoesNotJoinTheFill: a running fill commits
// its layer on its own parent; a Prepare of the same layer on another
// parent (another namespace's chain) must not join it, since what it
// would answer (ErrAlreadyExists) makes containerd look for the layer on
// its own parent, which the fill does not make, and fail the pull. It
// unpacks as usual, at once.
func TestPrepareOnAnotherParentDoesNotJoinTheFill(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestSnapshotter(t)
	r := &slowRemote{release: make(chan struct{})}
	defer close(r.release)
	s.cfg.Remote = r
	s.cfg.RemoteFillWait = 10 * time.Millisecond
	if _, err := s.Prepare(ctx, "base-active", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-active"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "unpack-1", "", remoteLabels()); err != nil {
		t.Fatal(err)
	}
	s.cfg.RemoteFillWait = time.Hour // a join would wait for the fill
	done := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, "unpack-2", "base", remoteLabels())
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Prepare on another parent: %v; want an ordinary snapshot", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a Prepare on another parent joined (waited for) the fill of the layer on no parent")
	}
	if n := r.opens.Load(); n != 1 {
		t.Errorf("layer store opened %d times, want 1 (the running fill's)", n)
	}
}

// TestFillEndingAsTheWaitTimesOutIsThePreparesResult: a fill that ends
// after the Prepare's timer fired but before it took the lock saw no
// detached waiter (so nobody logs its end) while the Prepare answered
// "still running" and let containerd fetch a layer already filled. The
// Prepare must take the fill's result then.
func TestFillEndingAsTheWaitTimesOutIsThePreparesResult(t *testing.T) {
	s, _, _ := newTestSnapshotter(t)
	r := &slowRemote{release: make(chan struct{})}
	s.cfg.Remote = r
	s.cfg.RemoteFillWait = 10 * time.Millisecond
	testHookFillWaitEnded = func() {
		close(r.release)
		for {
			s.fillsMu.Lock()
			n := len(s.fills)
			s.fillsMu.Unlock()
			if n == 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	defer func() { testHookFillWaitEnded = nil }()
	labels := map[string]string{snapshots.LabelSnapshotRef: testRef, "containerd.io/snapshot.diffid": "sha256:4567"}
	err := s.fillRemote(context.Background(), "", labels)
	if !errors.Is(err, errNotRemote) {
		t.Fatalf("fillRemote = %v, want the ended fill's result (%v)", err, errNotRemote)
	}
}
