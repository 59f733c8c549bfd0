package gc

import (
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

func TestBuildTree(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	snaps := []*metadata.Snapshot{
		{Key: "test/5/c2", Parent: "test/1/sha256:base", Kind: snapshots.KindActive, DeviceID: 12, Created: t0.Add(3 * time.Minute)},
		{Key: "test/1/sha256:base", Kind: snapshots.KindCommitted, State: metadata.SnapshotReady, DeviceID: 10, UsageBytes: 999, Created: t0},
		{Key: "test/4/c1", Parent: "test/1/sha256:base", Kind: snapshots.KindActive, DeviceID: 11, Created: t0.Add(2 * time.Minute)},
		{Key: "test/6/v", Parent: "test/4/c1", Kind: snapshots.KindView, DeviceID: 13, Created: t0.Add(4 * time.Minute)},
		{Key: "test/7/orphan", Parent: "test/3/gone", Kind: snapshots.KindActive, DeviceID: 14, Created: t0.Add(time.Minute)},
		{Key: "remote/sha256:x", Kind: snapshots.KindCommitted, DeviceID: 15, UsageBytes: 4096, Created: t0.Add(5 * time.Minute)},
	}
	u := DeviceUsage{Mapped: map[uint32]int64{10: 1 << 20, 11: 1<<20 + 4096}, Active: map[uint32]bool{11: true}}
	roots := BuildTree(snaps, func(id uint32) string { return snapshotter.DeviceName("p", id) }, u)

	var got []string
	var walk func(ns []*SnapshotNode, depth int)
	walk = func(ns []*SnapshotNode, depth int) {
		for _, n := range ns {
			got = append(got, strings.Repeat(".", depth)+n.Key)
			walk(n.Children, depth+1)
		}
	}
	walk(roots, 0)
	want := "test/1/sha256:base .test/4/c1 ..test/6/v .test/5/c2 test/7/orphan remote/sha256:x"
	if strings.Join(got, " ") != want {
		t.Errorf("tree = %v, want %s", got, want)
	}
	base := roots[0]
	if base.Namespace != "test" || base.Name != "sha256:base" || base.DeviceName != "p-thin-10" || base.Kind != "Committed" {
		t.Errorf("base node = %+v", base)
	}
	if base.Usage != 1<<20 {
		t.Errorf("base usage = %d, want the pool metadata's %d over the recorded 999", base.Usage, 1<<20)
	}
	if c1 := base.Children[0]; !c1.Active || c1.Usage != 1<<20+4096 {
		t.Errorf("c1 = %+v, want active with the mapped usage", c1)
	}
	if v := base.Children[0].Children[0]; v.Usage != -1 {
		t.Errorf("usage of a device missing from the pool = %d, want -1 (unknown)", v.Usage)
	}
	if r := roots[2]; r.Namespace != "" || r.Usage != 4096 {
		t.Errorf("remote fill = %+v, want no namespace and the recorded usage", r)
	}
}

func TestOtherDevices(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	devs := []*metadata.Device{
		{ID: 1, Role: metadata.RoleTemplate, State: metadata.DeviceReady, Owner: "ext4-256MiB"},
		{ID: 2, Role: metadata.RoleSpare, State: metadata.DeviceReady, Origin: 1},
		{ID: 3, Role: metadata.RoleSnapshot, State: metadata.DeviceReady, Owner: "test/1/x"},
		{ID: 4, Role: metadata.RoleSnapshot, State: metadata.DeviceOrphaned, Error: "mkfs failed"},
	}
	tpls := map[uint32]*metadata.Template{1: {Name: "ext4-256MiB", DeviceID: 1, Created: t0}}
	got := OtherDevices(devs, tpls, func(id uint32) string { return snapshotter.DeviceName("p", id) }, DeviceUsage{Mapped: map[uint32]int64{1: 8192}, Active: map[uint32]bool{2: true}})
	if len(got) != 3 || got[0].ID != 1 || got[1].ID != 2 || got[2].ID != 4 {
		t.Fatalf("other devices = %+v, want 1, 2, 4", got)
	}
	if !got[0].Created.Equal(t0) || got[0].Usage != 8192 || got[0].Name != "p-thin-1" {
		t.Errorf("template = %+v", got[0])
	}
	if !got[1].Active || got[1].Origin != 1 {
		t.Errorf("spare = %+v", got[1])
	}
	if got[2].Error != "mkfs failed" || got[2].State != "orphaned" {
		t.Errorf("orphan = %+v", got[2])
	}
}
