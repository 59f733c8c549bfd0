package gc

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
)

// A Prepare that lands between gc's read of the pool and its read of
// the records must not make its snapshot "a record without device".
func TestPlanNeverJudgesARecordNewerThanThePoolView(t *testing.T) {
	w := newWorld(t)
	w.snap("default/1/sha256:layer", "", snapshots.KindCommitted, w.old)
	readPool := func(ctx context.Context) (*thinmeta.Metadata, error) {
		md, err := w.readPool(ctx)
		// Right after the pool was read: `ctr run` prepares a container.
		w.snap("default/2/ctr-new", "default/1/sha256:layer", snapshots.KindActive, w.old)
		return md, err
	}
	rep, err := Plan(context.Background(), "pool", readPool, w.store, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range rep.Items {
		t.Errorf("planned %s %s (%s); the snapshot was created after the records were read", it.Kind, it.What(), it.Detail)
	}
}

// A Prepare between the read of the records and the read of the pool
// puts a device in the pool the records did not know: it is not
// reported as a device without record.
func TestPlanDoesNotReportADeviceRecordedAfterTheRecords(t *testing.T) {
	w := newWorld(t)
	readPool := func(ctx context.Context) (*thinmeta.Metadata, error) {
		w.snap("default/2/ctr-new", "", snapshots.KindActive, w.old)
		return w.readPool(ctx)
	}
	rep, err := Plan(context.Background(), "pool", readPool, w.store, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range rep.Items {
		t.Errorf("planned %s %s (%s)", it.Kind, it.What(), it.Detail)
	}
}

// A pool view older than the records (what a metadata snapshot held
// since before the container was created shows): gc lists the
// container's snapshot as a record without device, but Apply asks the
// live pool, which has it, and keeps it.
func TestApplyKeepsAMissingDeviceTheLivePoolHas(t *testing.T) {
	w := newWorld(t)
	w.snap("default/1/sha256:layer", "", snapshots.KindCommitted, w.old)
	stale := map[uint32]uint64{}
	for id, n := range w.pool {
		stale[id] = n
	}
	ctr := w.snap("default/2/ctr-stopped", "default/1/sha256:layer", snapshots.KindActive, w.old)
	staleRead := func(context.Context) (*thinmeta.Metadata, error) {
		md := &thinmeta.Metadata{DataBlockSize: 1 << 16}
		for id, n := range stale {
			md.Devices = append(md.Devices, thinmeta.Device{ID: id, MappedBlocks: n})
		}
		return md, nil
	}
	ctx := context.Background()
	rep, err := Plan(ctx, "pool", staleRead, w.store, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 1 || rep.Items[0].Kind != KindMissingDevice || rep.Items[0].DeviceID != ctr {
		t.Fatalf("plan on the stale view: %+v", rep.Items)
	}
	col := &fakeCollector{live: w.pool}
	Apply(ctx, rep, col, nil)
	if len(col.calls) != 0 || rep.Removed != 0 || rep.Failed != 1 {
		t.Errorf("removed a snapshot the live pool has: calls %v, report %+v", col.calls, rep.Items)
	}
	if !strings.Contains(rep.Items[0].Error, "live pool") {
		t.Errorf("error %q does not say why", rep.Items[0].Error)
	}
	// Really gone from the live pool: removed.
	delete(w.pool, ctr)
	rep, _ = Plan(ctx, "pool", staleRead, w.store, nil, Options{})
	Apply(ctx, rep, col, nil)
	if rep.Removed != 1 || len(col.calls) != 1 || col.calls[0] != "remove default/2/ctr-stopped" {
		t.Errorf("a really missing device's record: calls %v, %+v", col.calls, rep.Items)
	}
}

// A record without a device that someone else removed between plan and
// apply (containerd's own gc removes a backend key it does not know) is
// what gc wanted: not a failure.
func TestApplyRecordAlreadyGone(t *testing.T) {
	w := newWorld(t)
	ghost := w.snap("default/9/ghost", "", snapshots.KindCommitted, w.old)
	delete(w.pool, ghost)
	ctx := context.Background()
	rep, err := Plan(ctx, "pool", w.readPool, w.store, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 1 || rep.Items[0].Kind != KindMissingDevice {
		t.Fatalf("plan: %+v", rep.Items)
	}
	col := &fakeCollector{gone: map[string]bool{"default/9/ghost": true}}
	Apply(ctx, rep, col, nil)
	if rep.Failed != 0 || len(col.calls) != 0 {
		t.Errorf("a record gone before apply: failed %d, calls %v, %+v", rep.Failed, col.calls, rep.Items)
	}
}

func labelled(key string, labels ...string) snapshots.Info {
	l := map[string]string{metadata.LabelBackendKey: key}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	return snapshots.Info{Labels: l}
}

// A layer namespace a unpacked, adopted by namespace b (remote fill
// answering ErrAlreadyExists), after a deleted its image: b still uses
// a's key, so it is not garbage. containerd shows only names, so every
// key of a name some namespace holds is kept: b's own copy of l1 too (a
// leak, never a loss; the labels that would tell them apart can be
// forged, see TestPlanKeepsAKeyBehindAForgedBackendLabel).
func TestPlanKeepsALayerAnotherNamespaceUses(t *testing.T) {
	w := newWorld(t)
	c := snapshots.KindCommitted
	w.snap("a/3/sha256:l1", "", c, w.old)
	w.snap("a/4/sha256:l2", "a/3/sha256:l1", c, w.old)
	w.snap("b/7/sha256:l1", "", c, w.old)
	// A layer only an unlabelled snapshot (not through our Stat) could
	// be: kept.
	w.snap("a/5/sha256:l9", "", c, w.old)
	cd := &fakeContainerd{snaps: map[string]map[string]snapshots.Info{
		"a": {},
		"b": {
			"sha256:l1": labelled("a/3/sha256:l1"),
			"sha256:l2": labelled("a/4/sha256:l2"),
		},
		"c": {"sha256:l9": {}},
	}}
	ctx := context.Background()
	rep, err := Plan(ctx, "pool", w.readPool, w.store, cd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 0 {
		t.Fatalf("planned %+v, want nothing: every key is of a name a namespace holds", rep.Items)
	}

	// Once no namespace holds l1 (a's copy stays as l2's parent), b's
	// copy is garbage; but if namespace d adopts it between plan and
	// apply, Apply asks containerd again and keeps it.
	delete(cd.snaps["b"], "sha256:l1")
	rep, err = Plan(ctx, "pool", w.readPool, w.store, cd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var free []*Item
	for i := range rep.Items {
		if rep.Items[i].Blocked == "" {
			free = append(free, &rep.Items[i])
		}
	}
	if len(free) != 1 || free[0].Snapshot != "b/7/sha256:l1" || free[0].Kind != KindUnreferenced {
		t.Fatalf("planned %+v, want only b's unused copy b/7/sha256:l1 free to remove (a's copy blocked by l2)", rep.Items)
	}
	cd.snaps["d"] = map[string]snapshots.Info{"sha256:l1": labelled("b/7/sha256:l1")}
	col := &fakeCollector{}
	Apply(ctx, rep, col, cd)
	if len(col.calls) != 0 || free[0].Blocked == "" {
		t.Errorf("removed a layer containerd adopted after the plan: %v %+v", col.calls, *free[0])
	}
}

// A label that does not fit the name it is on (set by hand on
// containerd's side) proves nothing: every snapshot of ours that name
// could be is kept.
func TestPlanDoesNotTrustAMismatchedBackendLabel(t *testing.T) {
	w := newWorld(t)
	w.snap("a/3/sha256:l1", "", snapshots.KindCommitted, w.old)
	cd := &fakeContainerd{snaps: map[string]map[string]snapshots.Info{
		"a": {"sha256:l1": labelled("x/1/other")},
	}}
	rep, err := Plan(context.Background(), "pool", w.readPool, w.store, cd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 0 {
		t.Errorf("planned %+v", rep.Items)
	}
}

// A backend-key label that fits its name but names another key (set by
// hand with 'ctr snapshots label', or a stale copy containerd keeps: its
// own labels win over ours in Walk) must not make gc judge the key the
// snapshot really uses as unreferenced.
func TestPlanKeepsAKeyBehindAForgedBackendLabel(t *testing.T) {
	w := newWorld(t)
	w.snap("b/7/sha256:x", "", snapshots.KindCommitted, w.old)
	cd := &fakeContainerd{snaps: map[string]map[string]snapshots.Info{
		"b": {"sha256:x": labelled("a/5/sha256:x")},
	}}
	rep, err := Plan(context.Background(), "pool", w.readPool, w.store, cd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 0 {
		t.Errorf("planned %+v for a key namespace b still holds under its name", rep.Items)
	}
}

func TestQuarantinedDevicesNeedTheirFlag(t *testing.T) {
	w := newWorld(t)
	q := w.device(metadata.DeviceQuarantined, true)
	ctx := context.Background()
	rep, err := Plan(ctx, "pool", w.readPool, w.store, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 1 || rep.Items[0].Kind != KindQuarantined || !strings.Contains(rep.Items[0].Blocked, "--include-quarantined") {
		t.Fatalf("quarantined device: %+v", rep.Items)
	}
	if rep.TotalBytes != 0 {
		t.Errorf("a kept quarantined device counted in the space to free: %d", rep.TotalBytes)
	}
	col := &fakeCollector{}
	Apply(ctx, rep, col, nil)
	if len(col.calls) != 0 {
		t.Errorf("removed without the flag: %v", col.calls)
	}
	rep, err = Plan(ctx, "pool", w.readPool, w.store, nil, Options{IncludeQuarantined: true})
	if err != nil {
		t.Fatal(err)
	}
	Apply(ctx, rep, col, nil)
	if len(col.calls) != 1 || col.calls[0] != "device "+itoa(q) {
		t.Errorf("with the flag: %v", col.calls)
	}
}

// delete-image's base: another namespace that adopted it keeps it.
func TestUsedByContainerdLooksInEveryNamespace(t *testing.T) {
	ctx := context.Background()
	cd := &fakeContainerd{snaps: map[string]map[string]snapshots.Info{
		"flyio": {},
		"b":     {"sha256:base": labelled("flyio/4/sha256:base")},
	}}
	if used, err := UsedByContainerd(ctx, cd, "flyio/4/sha256:base"); err != nil || !used {
		t.Errorf("base adopted by b: used %v, %v", used, err)
	}
	if used, err := UsedByContainerd(ctx, cd, "flyio/5/sha256:other"); err != nil || used {
		t.Errorf("a base nobody uses: used %v, %v", used, err)
	}
	if _, err := UsedByContainerd(ctx, nil, "x"); err == nil {
		t.Error("no containerd: no error")
	}
}
