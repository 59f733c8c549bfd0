package gc

import (
	"context"
	"errors"
	"fmt"
	"github.com/containerd/errdefs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
)

type fakeContainerd struct {
	snaps   map[string]map[string]snapshots.Info
	err     error
	removed []string
}

func (f *fakeContainerd) Snapshots(context.Context) (map[string]map[string]snapshots.Info, error) {
	return f.snaps, f.err
}

func (f *fakeContainerd) Remove(_ context.Context, ns, name string) error {
	f.removed = append(f.removed, ns+"/"+name)
	return nil
}

type fakeCollector struct {
	calls []string
	// live is the pool as it is now; nil: every id is missing.
	live map[uint32]uint64
	// gone are snapshot records someone else removed after the plan.
	gone map[string]bool
}

func (f *fakeCollector) ConfirmMissing(_ context.Context, snapshot string, id uint32) error {
	if f.gone[snapshot] {
		return fmt.Errorf("snapshot %q: %w", snapshot, errdefs.ErrNotFound)
	}
	if _, ok := f.live[id]; ok {
		return fmt.Errorf("thin id %d is in the pool", id)
	}
	return nil
}

func (f *fakeCollector) Remove(_ context.Context, key string) error {
	f.calls = append(f.calls, "remove "+key)
	return nil
}

func (f *fakeCollector) CollectDevice(_ context.Context, id uint32, _ ...metadata.DeviceState) error {
	f.calls = append(f.calls, "device "+itoa(id))
	return nil
}

func (f *fakeCollector) CollectUnknownDevice(_ context.Context, id uint32) error {
	f.calls = append(f.calls, "unknown "+itoa(id))
	return nil
}

func (f *fakeCollector) ForgetTemplate(_ context.Context, name string, _ uint32) error {
	f.calls = append(f.calls, "template "+name)
	return nil
}

func itoa(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

// world is a metadata store plus the thin ids "in the pool".
type world struct {
	t     *testing.T
	store *metadata.Store
	pool  map[uint32]uint64 // id -> mapped blocks
	old   time.Time
}

func newWorld(t *testing.T) *world {
	s, err := metadata.Open(filepath.Join(t.TempDir(), "m.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &world{t: t, store: s, pool: map[uint32]uint64{}, old: time.Now().Add(-time.Hour)}
}

func (w *world) readPool(context.Context) (*thinmeta.Metadata, error) {
	md := &thinmeta.Metadata{DataBlockSize: 1 << 16}
	for id, n := range w.pool {
		md.Devices = append(md.Devices, thinmeta.Device{ID: id, MappedBlocks: n})
	}
	return md, nil
}

// snap records a ready snapshot on a new device in the pool.
func (w *world) snap(key, parent string, kind snapshots.Kind, created time.Time) uint32 {
	var id uint32
	err := w.store.Update(func(tx *metadata.Tx) (err error) {
		if id, err = tx.AllocateDeviceID(); err != nil {
			return err
		}
		if err := tx.PutDevice(&metadata.Device{ID: id, State: metadata.DeviceReady, Role: metadata.RoleSnapshot, Owner: key}); err != nil {
			return err
		}
		return tx.CreateSnapshot(&metadata.Snapshot{Key: key, Parent: parent, Kind: kind, State: metadata.SnapshotReady,
			DeviceID: id, Created: created, Updated: created})
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.pool[id] = 2
	return id
}

func (w *world) device(state metadata.DeviceState, inPool bool) uint32 {
	var id uint32
	err := w.store.Update(func(tx *metadata.Tx) (err error) {
		if id, err = tx.AllocateDeviceID(); err != nil {
			return err
		}
		return tx.PutDevice(&metadata.Device{ID: id, State: state, Role: metadata.RoleSnapshot, Owner: "x"})
	})
	if err != nil {
		w.t.Fatal(err)
	}
	if inPool {
		w.pool[id] = 1
	}
	return id
}

func TestPlanFindsEachKindAndOrdersChildrenFirst(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	c := snapshots.KindCommitted
	// Live: an image layer and a container on it that containerd knows.
	w.snap("default/1/sha256:layer", "", c, w.old)
	w.snap("default/2/ctr1", "default/1/sha256:layer", snapshots.KindActive, w.old)
	// Forgotten chain: parent and child containerd does not know.
	w.snap("default/3/sha256:gone", "", c, w.old)
	w.snap("default/4/gone-child", "default/3/sha256:gone", snapshots.KindActive, w.old)
	// Forgotten, but a known snapshot depends on it: kept.
	w.snap("default/5/sha256:base", "", c, w.old)
	w.snap("default/6/known-child", "default/5/sha256:base", snapshots.KindActive, w.old)
	// Too young to judge.
	w.snap("default/7/young", "", snapshots.KindActive, time.Now())
	// Failed import: its run failed.
	w.snap("default/8/flyio-import-r1", "", snapshots.KindActive, time.Now())
	// Import in progress: untouchable.
	w.snap("default/9/flyio-import-r2", "", snapshots.KindActive, time.Now())
	// Remote fill leftover, and a remote fill containerd uses by its ref.
	w.snap("remote-fill/sha256:x/abc", "", snapshots.KindActive, w.old)
	w.snap("remote/sha256:used", "", c, w.old)
	w.snap("remote/sha256:unused", "", c, w.old)
	// Keys we cannot map are left alone.
	w.snap("weird-key", "", c, w.old)
	orphan := w.device(metadata.DeviceOrphaned, true)
	quarantined := w.device(metadata.DeviceQuarantined, false)
	w.pool[500] = 7 // no record
	ghost := w.snap("default/10/sha256:ghost", "", c, w.old)
	delete(w.pool, ghost)
	creating := w.device(metadata.DeviceCreating, false)
	_ = creating

	if err := w.store.Update(func(tx *metadata.Tx) error {
		if err := tx.PutRun(&metadata.Run{ID: "r1", State: metadata.RunFailed, Error: "boom"}); err != nil {
			return err
		}
		return tx.PutRun(&metadata.Run{ID: "r2", State: metadata.RunExtracting})
	}); err != nil {
		t.Fatal(err)
	}
	cd := &fakeContainerd{snaps: map[string]map[string]snapshots.Info{
		"default": {
			"sha256:layer": {}, "ctr1": {}, "known-child": {}, "flyio-import-r1": {},
			"sha256:used": {Labels: map[string]string{snapshots.LabelSnapshotRef: "sha256:used"}},
		},
	}}
	rep, err := Plan(ctx, "pool", w.readPool, w.store, cd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Item{}
	for _, it := range rep.Items {
		name := it.Snapshot
		if name == "" {
			name = "dev " + itoa(it.DeviceID)
		}
		got[name] = it
	}
	want := map[string]Kind{
		"default/3/sha256:gone":     KindUnreferenced,
		"default/4/gone-child":      KindUnreferenced,
		"default/5/sha256:base":     KindUnreferenced,
		"default/8/flyio-import-r1": KindFailedImport,
		"remote-fill/sha256:x/abc":  KindRemoteFill,
		"remote/sha256:unused":      KindUnreferenced,
		"default/10/sha256:ghost":   KindMissingDevice,
		"dev " + itoa(orphan):       KindOrphaned,
		"dev " + itoa(quarantined):  KindQuarantined,
		"dev 500":                   KindUnknownDevice,
	}
	for name, k := range want {
		if it, ok := got[name]; !ok || it.Kind != k {
			t.Errorf("%s: got %+v, want kind %s", name, it, k)
		}
	}
	if len(got) != len(want) {
		t.Errorf("planned %d items, want %d: %+v", len(got), len(want), rep.Items)
	}
	if b := got["default/5/sha256:base"].Blocked; !strings.Contains(b, "known-child") {
		t.Errorf("base with a live child not blocked: %q", b)
	}
	if got["dev 500"].Bytes != 7<<16 || got["dev "+itoa(quarantined)].InPool {
		t.Errorf("space or presence wrong: %+v %+v", got["dev 500"], got["dev "+itoa(quarantined)])
	}
	if it := got["default/8/flyio-import-r1"]; it.Namespace != "default" || it.Name != "flyio-import-r1" {
		t.Errorf("failed import not tied to containerd's record: %+v", it)
	}

	col := &fakeCollector{}
	Apply(ctx, rep, col, cd)
	idx := func(call string) int {
		for i, c := range col.calls {
			if c == call {
				return i
			}
		}
		t.Errorf("%q not called: %v", call, col.calls)
		return -1
	}
	if idx("remove default/4/gone-child") > idx("remove default/3/sha256:gone") {
		t.Errorf("parent removed before child: %v", col.calls)
	}
	for _, c := range col.calls {
		if c == "remove default/5/sha256:base" {
			t.Errorf("blocked snapshot removed: %v", col.calls)
		}
	}
	idx("unknown 500")
	idx("device " + itoa(orphan))
	if len(cd.removed) != 1 || cd.removed[0] != "default/flyio-import-r1" {
		t.Errorf("containerd removals %v", cd.removed)
	}
	for _, c := range col.calls {
		if c == "device "+itoa(quarantined) {
			t.Errorf("quarantined device removed without --include-quarantined: %v", col.calls)
		}
	}
	// All but the blocked base and the quarantined device.
	if rep.Removed != len(want)-2 || rep.Failed != 0 {
		t.Errorf("removed %d failed %d", rep.Removed, rep.Failed)
	}
}

func TestPlanWithoutContainerdSkipsUnreferenced(t *testing.T) {
	w := newWorld(t)
	w.snap("default/1/forgotten", "", snapshots.KindActive, w.old)
	for _, cd := range []Containerd{nil, &fakeContainerd{err: errors.New("connection refused")}} {
		rep, err := Plan(context.Background(), "pool", w.readPool, w.store, cd, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Items) != 0 || !strings.Contains(rep.Containerd, "not checked") {
			t.Errorf("containerd %v: %+v", cd, rep)
		}
	}
}

func TestSplitBackendKey(t *testing.T) {
	for key, want := range map[string]string{
		"default/12/sha256:abc":   "default|sha256:abc",
		"k8s.io/3/a/b":            "k8s.io|a/b",
		"remote/sha256:abc":       "",
		"remote-fill/sha256:x/ab": "",
		"plain":                   "",
	} {
		ns, name, ok := splitBackendKey(key)
		got := ""
		if ok {
			got = ns + "|" + name
		}
		if got != want {
			t.Errorf("%q: %q, want %q", key, got, want)
		}
	}
}
