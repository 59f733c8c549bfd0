package snapshotter

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/metadata"
)

func TestBlankPrepareMakesAFreshThinDevice(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newSpareSnapshotter(t, 1)
	spares := s.spares.count()
	m, err := s.Prepare(ctx, "blank", "", snapshots.WithLabels(map[string]string{
		LabelBlank: "xfs", snapshots.LabelSnapshotMaxSize: "134217728",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[0].Type != "xfs" {
		t.Fatalf("mounts = %+v, want one xfs mount of the device", m)
	}
	if s.spares.count() != spares {
		t.Fatal("a blank Prepare took a spare")
	}
	var rec *metadata.Snapshot
	var dev *metadata.Device
	store.View(func(tx *metadata.Tx) (err error) {
		if rec, err = tx.Snapshot("blank"); err != nil {
			return err
		}
		dev, err = tx.Device(rec.DeviceID)
		return err
	})
	if rec.FSType != "xfs" || rec.Size != 128<<20 || dev.Origin != 0 || dev.Size != 128<<20 {
		t.Fatalf("record %+v device %+v: want a 128MiB xfs snapshot on a create_thin device", rec, dev)
	}
	if _, ok := pool.thins[rec.DeviceID]; !ok {
		t.Fatalf("device %d not in the pool", rec.DeviceID)
	}
	// It commits like any snapshot.
	if err := s.Commit(ctx, "base", "blank"); err != nil {
		t.Fatal(err)
	}
}

func TestBlankLabelIsChecked(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		parent string
		view   bool
		fs     string
	}{
		"unknown fs":  {fs: "btrfs"},
		"with parent": {parent: "base", fs: "ext4"},
		"view":        {fs: "ext4", view: true},
	} {
		opt := snapshots.WithLabels(map[string]string{LabelBlank: c.fs})
		var err error
		if c.view {
			_, err = s.View(ctx, "k-"+name, c.parent, opt)
		} else {
			_, err = s.Prepare(ctx, "k-"+name, c.parent, opt)
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// TestOurLabelsReachUsThroughContainerd: containerd passes a snapshotter
// only the labels snapshots.FilterInheritedLabels keeps. A label it drops
// turns a blank (or lazily-backed) Prepare into an ordinary one without
// an error; the block fill once ran on a formatted template that way.
func TestOurLabelsReachUsThroughContainerd(t *testing.T) {
	labels := map[string]string{LabelBlank: "ext4", LabelExternalOrigin: "bi-1"}
	got := snapshots.FilterInheritedLabels(labels)
	for k := range labels {
		if _, ok := got[k]; !ok {
			t.Errorf("containerd drops label %s before it reaches the snapshotter", k)
		}
	}
}
