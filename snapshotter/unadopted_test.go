package snapshotter

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/superfly/flyio-image-manager/dmpool"
)

const testRef = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// commitLayer makes the committed snapshot name on parent with the ref
// label, as fillOnce commits a layer; unadopted marks it as a background
// fill's (at when).
func commitLayer(t *testing.T, s *Snapshotter, name, parent, ref string, unadopted bool, when time.Time) {
	t.Helper()
	ctx := context.Background()
	tmp := "remote-fill/" + ref + "/test"
	if _, err := s.Prepare(ctx, tmp, parent); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, name, tmp, snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: ref})); err != nil {
		t.Fatal(err)
	}
	if unadopted {
		s.fillsMu.Lock()
		s.unadopted[name] = when
		s.fillsMu.Unlock()
	}
}

func walkNames(t *testing.T, s *Snapshotter, fs ...string) []string {
	t.Helper()
	var names []string
	if err := s.Walk(context.Background(), func(_ context.Context, i snapshots.Info) error {
		names = append(names, i.Name)
		return nil
	}, fs...); err != nil {
		t.Fatal(err)
	}
	return names
}

// adoptionFilter is the walk containerd's metadata makes after a Prepare
// answered ErrAlreadyExists (core/metadata/snapshot.go createSnapshot).
func adoptionFilter(ref, parent string) string {
	return fmt.Sprintf(`labels.%q==%s,parent==%q`, snapshots.LabelSnapshotRef, ref, parent)
}

// TestUnadoptedLayerIsHiddenFromContainerdsGC: a layer a background fill
// committed is not in an unfiltered walk (containerd's GC would remove
// it, and the next pull would fetch it from S3 again) until containerd's
// adoption walk is offered it; from then on every walk shows it.
func TestUnadoptedLayerIsHiddenFromContainerdsGC(t *testing.T) {
	s, _, _ := newTestSnapshotter(t)
	name := remoteName(testRef)
	commitLayer(t, s, name, "", testRef, true, time.Now())

	if got := walkNames(t, s); slices.Contains(got, name) {
		t.Fatalf("unfiltered walk (containerd's GC) shows the unadopted layer: %v", got)
	}
	if got := walkNames(t, s, "kind==committed"); !slices.Contains(got, name) {
		t.Errorf("a filtered walk does not show the layer: %v", got)
	}
	if got := walkNames(t, s); slices.Contains(got, name) {
		t.Fatalf("a walk not filtered on the ref label ended the hiding: %v", got)
	}
	if got := walkNames(t, s, adoptionFilter(testRef, "")); !slices.Equal(got, []string{name}) {
		t.Fatalf("adoption walk = %v, want [%s]", got, name)
	}
	if got := walkNames(t, s); !slices.Contains(got, name) {
		t.Errorf("after the adoption walk the unfiltered walk still hides the layer: %v", got)
	}
}

// TestUnadoptedLayerIsHiddenForALimitedTime: a layer nobody adopts is
// shown again after unadoptedKeep, for containerd's GC to collect.
func TestUnadoptedLayerIsHiddenForALimitedTime(t *testing.T) {
	s, _, _ := newTestSnapshotter(t)
	name := remoteName(testRef)
	commitLayer(t, s, name, "", testRef, true, time.Now().Add(-unadoptedKeep-time.Second))
	if got := walkNames(t, s); !slices.Contains(got, name) {
		t.Errorf("a layer filled %s ago is still hidden: %v", unadoptedKeep, got)
	}
}

// TestRemovingTheParentOfUnadoptedLayersRemovesThem: containerd's GC
// removes the layers of a deleted image leaves first, by what its walk
// shows; the unadopted layers a background fill built on one of them are
// not shown, so the Remove of their parent takes them along instead of
// being refused (and logged at every GC) for children nobody can see.
// Any other child still makes the Remove fail.
func TestRemovingTheParentOfUnadoptedLayersRemovesThem(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "unpack-base", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "unpack-base"); err != nil {
		t.Fatal(err)
	}
	l1, l2 := remoteName("sha256:01"), remoteName("sha256:02")
	commitLayer(t, s, l1, "base", "sha256:01", true, time.Now())
	commitLayer(t, s, l2, l1, "sha256:02", true, time.Now())

	if err := s.Remove(ctx, "base"); err != nil {
		t.Fatalf("Remove of the parent of unadopted layers: %v", err)
	}
	for _, k := range []string{"base", l1, l2} {
		if _, err := s.Stat(ctx, k); !errdefs.IsNotFound(err) {
			t.Errorf("Stat(%s) after the Remove: %v, want not found", k, err)
		}
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}

	// An adopted layer (or any other child) keeps its parent.
	if _, err := s.Prepare(ctx, "unpack-base2", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base2", "unpack-base2"); err != nil {
		t.Fatal(err)
	}
	commitLayer(t, s, l1, "base2", "sha256:01", true, time.Now())
	if _, err := s.Prepare(ctx, "container", l1); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "base2"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Remove of a parent whose unadopted child has a child of its own: %v, want failed precondition", err)
	}
	if _, err := s.Stat(ctx, l1); err != nil {
		t.Errorf("the unadopted layer with a child was removed: %v", err)
	}
}

// TestRemoteCandidateNeedsAChainID: the ref becomes the key "remote/<ref>";
// one that is not a digest (a slash in it could name a key of a containerd
// namespace called "remote") is not filled.
func TestRemoteCandidateNeedsAChainID(t *testing.T) {
	s, _, _ := newTestSnapshotter(t)
	s.cfg.Remote = &slowRemote{release: make(chan struct{})}
	for ref, want := range map[string]bool{testRef: true, "sha256:0123": false, "12/sha256:x": false, "": false} {
		if got := s.remoteCandidate(snapshots.KindActive, map[string]string{snapshots.LabelSnapshotRef: ref}); got != want {
			t.Errorf("remoteCandidate(ref %q) = %v, want %v", ref, got, want)
		}
	}
}

// chainRef is a chain id for a test layer: a remote fill needs one.
func chainRef(name string) string { return digest.FromString(name).String() }

// refusingPool is the fake pool as the guard shows it when the pool is
// above full_threshold.
type refusingPool struct{ *fakePool }

func (refusingPool) Admit(context.Context, string) error { return dmpool.ErrPoolFull }

// TestUnadoptedLayersAreNotKeptInAFullPool: when the pool takes no new
// work, the layers filled in the background are caches containerd's GC
// should collect, not an hour of held space.
func TestUnadoptedLayersAreNotKeptInAFullPool(t *testing.T) {
	s, fp, _ := newTestSnapshotter(t)
	name := remoteName(testRef)
	commitLayer(t, s, name, "", testRef, true, time.Now())
	s.pool = refusingPool{fp}
	if got := walkNames(t, s); !slices.Contains(got, name) {
		t.Errorf("containerd's GC does not see an unadopted layer in a full pool: %v", got)
	}
}
