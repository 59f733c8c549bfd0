package snapshotter

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// newTestStore is a fresh metadata store, closed when t ends.
func newTestStore(t *testing.T) *metadata.Store {
	t.Helper()
	store, err := metadata.Open(filepath.Join(t.TempDir(), "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func newTestSnapshotter(t *testing.T) (*Snapshotter, *fakePool, *metadata.Store) {
	t.Helper()
	store := newTestStore(t)
	pool := newFakePool()
	s, err := New(context.Background(), pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Before the store closes (cleanups run last first): the background
	// reaper and fills are done by then.
	t.Cleanup(func() { s.Close() })
	s.format = func(context.Context, string, string) error { return nil }
	return s, pool, store
}

func TestLifecycleOnFakePool(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	m, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[0].Type != "ext4" || m[0].Source != "/dev/mapper/fake-thin-2" {
		t.Fatalf("mounts = %+v", m)
	}
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "b", "base"); err != nil {
		t.Fatal(err)
	}
	vm, err := s.View(ctx, "v", "base")
	if err != nil || vm[0].Options[0] != "ro" {
		t.Fatalf("view mounts %+v, %v", vm, err)
	}
	if err := s.Remove(ctx, "base"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("removing a parent: %v", err)
	}
	var names []string
	s.Walk(ctx, func(_ context.Context, i snapshots.Info) error { names = append(names, i.Name); return nil }, "kind==committed")
	if len(names) != 1 || names[0] != "base" {
		t.Fatalf("walk committed = %v", names)
	}
	for _, k := range []string{"b", "v", "base"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
	}
	// Remove leaves the dm work to the reaper; Cleanup finishes it.
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	// Only the template is left in the pool.
	if len(pool.thins) != 1 || len(pool.active) != 0 {
		t.Fatalf("left in pool: thins %v active %v", pool.thins, pool.active)
	}
}

func TestFailedActivationOrphansTheDevice(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "warm", ""); err != nil {
		t.Fatal(err)
	}
	pool.fail["activate"] = errors.New("injected activation failure")
	if _, err := s.Prepare(ctx, "x", ""); err == nil {
		t.Fatal("prepare succeeded through a failed activation")
	}
	if _, err := s.Stat(ctx, "x"); !errdefs.IsNotFound(err) {
		t.Fatalf("a half-made snapshot is visible: %v", err)
	}
	var orphans int
	store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(_ uint32, d *metadata.Device, _ error) error {
			if d.State == metadata.DeviceOrphaned {
				orphans++
			}
			return nil
		})
	})
	if orphans != 1 {
		t.Fatalf("orphans = %d, want 1 (fail-dumb: kept for gc)", orphans)
	}
	// The key can be used again.
	if _, err := s.Prepare(ctx, "x", ""); err != nil {
		t.Fatal(err)
	}
}

func TestPoolFullLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "warm", ""); err != nil {
		t.Fatal(err)
	}
	pool.fail["snapshot"] = dmpool.ErrPoolFull
	if _, err := s.Prepare(ctx, "x", ""); !errors.Is(err, dmpool.ErrPoolFull) {
		t.Fatalf("prepare on a full pool: %v", err)
	}
	store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(_ uint32, d *metadata.Device, _ error) error {
			if d.Owner == "x" {
				t.Errorf("device record left for a create_snap that made nothing: %+v", d)
			}
			return nil
		})
	})
}

func TestInterruptedPrepareIsOrphanedOnRestart(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "ok", ""); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash after the reservation: the record says creating.
	rec, _, err := s.reserve(snapshots.KindActive, "half", "", nil, 1, 64<<20, "ext4", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, pool, store, Config{BaseSize: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "half"); !errdefs.IsNotFound(err) {
		t.Fatalf("half-made snapshot survived restart: %v", err)
	}
	store.View(func(tx *metadata.Tx) error {
		d, err := tx.Device(rec.DeviceID)
		if err != nil || d.State != metadata.DeviceOrphaned {
			t.Errorf("device %d after restart: %+v %v", rec.DeviceID, d, err)
		}
		return nil
	})
	if _, err := s.Mounts(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
}

// newSpareSnapshotter is a snapshotter on a fake pool and a fresh store
// with n spares of a 64 MiB ext4 template made ready.
func newSpareSnapshotter(t *testing.T, n int) (*Snapshotter, *fakePool, *metadata.Store) {
	t.Helper()
	store := newTestStore(t)
	pool := newFakePool()
	s := &Snapshotter{pool: pool, store: store, cfg: Config{BaseSize: 64 << 20, FSType: "ext4"},
		templates: map[string]*sync.Mutex{}, format: func(context.Context, string, string) error { return nil }}
	s.spares = newSpares(s, n)
	s.spares.refill(context.Background())
	return s, pool, store
}

func TestParentlessPrepareClaimsASpare(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newSpareSnapshotter(t, 2)
	if n := s.spares.count(); n != 2 {
		t.Fatalf("%d spares after refill, want 2", n)
	}
	activeBefore := len(pool.active)
	m, err := s.Prepare(ctx, "a", "", snapshots.WithLabels(map[string]string{"l": "v"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(pool.active) != activeBefore || s.spares.count() != 1 {
		t.Fatalf("claim activated a device or did not take a spare: active %d->%d, spares %d", activeBefore, len(pool.active), s.spares.count())
	}
	info, err := s.Stat(ctx, "a")
	if err != nil || info.Labels["l"] != "v" || m[0].Source == "" {
		t.Fatalf("claimed snapshot: %+v %v %+v", info, err, m)
	}
	// A non-default size never takes a spare.
	if _, err := s.Prepare(ctx, "big", "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotMaxSize: "134217728"})); err != nil {
		t.Fatal(err)
	}
	if s.spares.count() != 1 {
		t.Fatalf("a 128MiB Prepare took a 64MiB spare")
	}
	// A claimed spare is an ordinary snapshot: commit, child, remove.
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "child", "base"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"child", "base", "big"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	// Spares survive a restart: they are loaded, not remade.
	s2, err := New(ctx, pool, store, Config{BaseSize: 64 << 20, Spares: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n := s2.spares.count(); n < 1 {
		t.Fatalf("spares after restart: %d", n)
	}
}

func TestBadRecordsAreQuarantinedNotFatal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "metadata.db")
	store, err := metadata.Open(path, metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := newFakePool()
	s, err := New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.format = func(context.Context, string, string) error { return nil }
	if _, err := s.Prepare(ctx, "good", ""); err != nil {
		t.Fatal(err)
	}
	store.Close()

	// Damage one snapshot, one device and one op record behind the store's back.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		tx.Bucket([]byte("snapshots")).Put([]byte("broken"), []byte("{"))
		tx.Bucket([]byte("devices")).Put([]byte{0, 0, 0, 77}, []byte("nope"))
		tx.Bucket([]byte("ops")).Put([]byte{0, 0, 0, 0, 0, 0, 0, 99}, []byte("]"))
		return nil
	})
	db.Close()

	store, err = metadata.Open(path, metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// A device that no longer activates is quarantined too.
	pool.fail["activate"] = errors.New("injected: thin device missing")
	s, err = New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatalf("one bad record stopped the start: %v", err)
	}
	states := map[uint32]metadata.DeviceState{}
	store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(id uint32, d *metadata.Device, err error) error {
			if err != nil {
				t.Errorf("device %d still undecodable: %v", id, err)
				return nil
			}
			states[id] = d.State
			return nil
		})
	})
	if states[77] != metadata.DeviceQuarantined {
		t.Errorf("undecodable device 77: %q, want quarantined", states[77])
	}
	if _, err := s.Stat(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	var goodDev uint32
	store.View(func(tx *metadata.Tx) error { r, _ := tx.Snapshot("good"); goodDev = r.DeviceID; return nil })
	if states[goodDev] != metadata.DeviceQuarantined {
		t.Errorf("device %d that failed to activate: %q, want quarantined", goodDev, states[goodDev])
	}
	// Next start activates it again and lifts the quarantine.
	if _, err := New(ctx, pool, store, Config{BaseSize: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	store.View(func(tx *metadata.Tx) error {
		if d, _ := tx.Device(goodDev); d.State != metadata.DeviceReady {
			t.Errorf("device %d after a good activation: %q", goodDev, d.State)
		}
		return nil
	})
}

// TestMountsAreOneFilesystemOnTheDevice pins what microVM runtimes read
// (docs/microvm.md): exactly one mount, Type the filesystem, Source the
// thin device's node, "ro" only for views.
func TestMountsAreOneFilesystemOnTheDevice(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestSnapshotter(t)
	m, err := s.Prepare(ctx, "vm-rootfs", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[0].Type != "ext4" || !strings.HasPrefix(m[0].Source, "/dev/mapper/fake-thin-") || len(m[0].Options) != 0 {
		t.Fatalf("active mount = %+v", m)
	}
	if err := s.Commit(ctx, "base", "vm-rootfs"); err != nil {
		t.Fatal(err)
	}
	v, err := s.View(ctx, "ro", "base")
	if err != nil || len(v) != 1 || v[0].Type != "ext4" || !slices.Equal(v[0].Options, []string{"ro"}) {
		t.Fatalf("view mount = %+v, %v", v, err)
	}
}

func TestDiscardBlocksBeforeDelete(t *testing.T) {
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		s, pool, _ := newTestSnapshotter(t)
		s.cfg.DiscardBlocks = on
		if _, err := s.Prepare(ctx, "c", ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, "c"); err != nil {
			t.Fatal(err)
		}
		// The reaper may not have run yet; Cleanup does what is left.
		if err := s.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		if got := len(pool.discarded); (got == 1) != on {
			t.Errorf("discard_blocks=%v: %d discards on Remove", on, got)
		}
	}
}
