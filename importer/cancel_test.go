package importer

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/metadata"
)

// noContainerd fails every connection: a run admitted to the unpacks
// queue fails at its first step, so these tests need no containerd, dm
// or S3 and only exercise the queue and cancel logic.
type noContainerd struct{}

var errNoContainerd = errors.New("no containerd in unit tests")

func (noContainerd) Client(context.Context) (*client.Client, error) { return nil, errNoContainerd }
func (noContainerd) Namespace() string                              { return "test" }

// testImporter returns an importer with an unpacks queue of one whose
// only slot the caller holds until it calls the returned release.
func testImporter(t *testing.T) (*Importer, context.CancelFunc, func()) {
	t.Helper()
	store, err := metadata.Open(filepath.Join(t.TempDir(), "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ctx, stop := context.WithCancel(context.Background())
	im := New(ctx, Config{UnpackQueueSize: 1}, nil, noContainerd{}, store)
	t.Cleanup(func() { stop(); im.Wait() })
	release, err := im.unpacks.Acquire(ctx, "blocker")
	if err != nil {
		t.Fatal(err)
	}
	return im, stop, release
}

// submit records and starts a run the way Submit does, minus S3.
func submit(t *testing.T, im *Importer, key string) metadata.Run {
	t.Helper()
	r := metadata.Run{ID: newRunID() + "-" + key, Bucket: "b", Key: key, ETag: "e-" + key, State: metadata.RunQueued, Created: time.Now().UTC()}
	if err := im.store.Update(func(tx *metadata.Tx) error { return tx.PutRun(&r) }); err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	im.start(r)
	im.mu.Unlock()
	return r
}

func unpacksQueue(im *Importer) QueueInfo {
	for _, q := range im.Queues() {
		if q.Name == QueueUnpacks {
			return q
		}
	}
	return QueueInfo{}
}

func runIDs(q QueueInfo) (ids []string) {
	for _, r := range q.Runs {
		ids = append(ids, r.ID)
	}
	return ids
}

func TestCancelQueuedRun(t *testing.T) {
	im, _, release := testImporter(t)
	a := submit(t, im, "a")
	waitFor(t, "a waiting", func() bool { return unpacksQueue(im).Waiting == 1 })
	b := submit(t, im, "b")
	waitFor(t, "b waiting", func() bool { return unpacksQueue(im).Waiting == 2 })

	q := unpacksQueue(im)
	if q.Capacity != 1 || q.Active != 1 || strings.Join(runIDs(q), " ") != "blocker "+a.ID+" "+b.ID {
		t.Fatalf("unpacks queue = %+v, want the blocker active and a, b waiting in that order", q)
	}
	if q.Runs[1].Position != 1 || q.Runs[2].Position != 2 || q.Runs[2].State != metadata.RunQueued || q.Runs[2].Key != "b" {
		t.Errorf("queue entries = %+v", q.Runs)
	}

	got, err := im.Cancel(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != metadata.RunCancelled || !strings.Contains(got.Error, "cancelled by the operator while queued") {
		t.Errorf("cancelled run: %s %q", got.State, got.Error)
	}
	if stored, _ := im.Get(b.ID); stored.State != metadata.RunCancelled {
		t.Errorf("stored state %s, want cancelled", stored.State)
	}
	if ids := runIDs(unpacksQueue(im)); strings.Join(ids, " ") != "blocker "+a.ID {
		t.Errorf("after cancelling b the queue holds %q", ids)
	}

	// Cancelling again names the state; an unknown id is not found.
	if _, err := im.Cancel(context.Background(), b.ID); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "already cancelled") {
		t.Errorf("second cancel: %v", err)
	}
	if _, err := im.Cancel(context.Background(), "nope"); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("cancel of an unknown run: %v", err)
	}

	// The slot frees: a goes next and fails on its own (no containerd),
	// which is a failure, not a cancel.
	release()
	r, _ := im.WaitRun(context.Background(), a.ID)
	if r.State != metadata.RunFailed || !strings.Contains(r.Error, errNoContainerd.Error()) {
		t.Errorf("run a after the slot freed: %s %q", r.State, r.Error)
	}
}

func TestCancelRefusedWhileCommitting(t *testing.T) {
	im, _, _ := testImporter(t)
	a := submit(t, im, "a")
	waitFor(t, "a waiting", func() bool { return unpacksQueue(im).Waiting == 1 })
	im.mu.Lock()
	rs := im.active[a.ID]
	im.mu.Unlock()
	rs.mu.Lock()
	rs.run.State = metadata.RunCommitting
	rs.mu.Unlock()
	_, err := im.Cancel(context.Background(), a.ID)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "too late to cancel") {
		t.Errorf("cancel while committing: %v", err)
	}
	if rs.cancelRequested() {
		t.Error("a refused cancel marked the run cancelled")
	}
}

func TestEnterCommittingAfterCancel(t *testing.T) {
	im, _, _ := testImporter(t)
	rs := &runState{run: metadata.Run{ID: "x", State: metadata.RunExtracting}, cancelled: true}
	if err := im.enterCommitting(rs, func(*metadata.Run) {}); !errors.Is(err, ErrCancelled) {
		t.Errorf("enterCommitting of a cancelled run: %v", err)
	}
	if rs.run.State != metadata.RunExtracting {
		t.Errorf("state moved to %s", rs.run.State)
	}
}

// A daemon shutdown leaves a queued run unfinished, to be resumed; a run
// cancelled before it was resumed is not.
func TestShutdownLeavesRunsResumable(t *testing.T) {
	im, stop, _ := testImporter(t)
	a := submit(t, im, "a")
	b := submit(t, im, "b")
	waitFor(t, "a, b waiting", func() bool { return unpacksQueue(im).Waiting == 2 })
	stop()
	im.Wait()
	for _, id := range []string{a.ID, b.ID} {
		if r, _ := im.Get(id); r.State != metadata.RunQueued {
			t.Errorf("run %s after shutdown: %s, want queued", id, r.State)
		}
	}

	next := New(context.Background(), Config{UnpackQueueSize: 1}, nil, noContainerd{}, im.store)
	got, err := next.Cancel(context.Background(), b.ID)
	if err != nil || got.State != metadata.RunCancelled {
		t.Fatalf("cancel of an unresumed run: %v %s", err, got.State)
	}
	if err := next.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	next.mu.Lock()
	_, resumedA := next.active[a.ID]
	_, resumedB := next.active[b.ID]
	next.mu.Unlock()
	next.Wait()
	if !resumedA || resumedB {
		t.Errorf("resumed a: %v (want true), b: %v (want false)", resumedA, resumedB)
	}
}
