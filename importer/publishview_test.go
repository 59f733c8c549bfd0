package importer

import (
	"context"
	"reflect"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// walkRemover is the part of a snapshotter RemovePublishViews uses.
type walkRemover struct {
	snapshots.Snapshotter
	infos   []snapshots.Info
	removed []string
}

func (w *walkRemover) Walk(ctx context.Context, fn snapshots.WalkFunc, _ ...string) error {
	for _, i := range w.infos {
		if err := fn(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func (w *walkRemover) Remove(_ context.Context, key string) error {
	w.removed = append(w.removed, key)
	return nil
}

// TestLeftPublishViewsAreRemovedAtStart: a daemon killed during
// publish-base leaves its view; gc does not report a key it cannot map
// to containerd's, and the view keeps delete-image from the base. The
// next start removes it, and nothing else.
func TestLeftPublishViewsAreRemovedAtStart(t *testing.T) {
	w := &walkRemover{infos: []snapshots.Info{
		{Name: "flyio-publish/r1", Kind: snapshots.KindView, Parent: "default/1/sha256:base"},
		{Name: "default/1/sha256:base", Kind: snapshots.KindCommitted},
		{Name: "default/2/flyio-publish/x", Kind: snapshots.KindView},
		{Name: "default/3/flyio-import-r2", Kind: snapshots.KindActive},
	}}
	if err := RemovePublishViews(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	if want := []string{"flyio-publish/r1"}; !reflect.DeepEqual(w.removed, want) {
		t.Fatalf("removed %v, want %v", w.removed, want)
	}
}
