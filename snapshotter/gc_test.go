package snapshotter

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/metadata"
)

func TestCollectDeviceDeletesOrphansOnly(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "live", ""); err != nil {
		t.Fatal(err)
	}
	pool.fail["activate"] = errors.New("injected activation failure")
	if _, err := s.Prepare(ctx, "x", ""); err == nil {
		t.Fatal("prepare succeeded through a failed activation")
	}
	var orphan, live uint32
	store.View(func(tx *metadata.Tx) error {
		rec, _ := tx.Snapshot("live")
		live = rec.DeviceID
		return tx.Devices(func(id uint32, d *metadata.Device, _ error) error {
			if d.State == metadata.DeviceOrphaned {
				orphan = id
			}
			return nil
		})
	})
	if orphan == 0 {
		t.Fatal("no orphan")
	}
	// A device a snapshot uses is refused, whatever state is claimed.
	if err := s.CollectDevice(ctx, live, metadata.DeviceReady); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("collecting a live snapshot's device: %v", err)
	}
	if err := s.CollectDevice(ctx, orphan, metadata.DeviceQuarantined); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("collecting an orphan as quarantined: %v", err)
	}
	if err := s.CollectDevice(ctx, orphan, metadata.DeviceOrphaned); err != nil {
		t.Fatal(err)
	}
	if _, ok := pool.thins[orphan]; ok {
		t.Error("orphan still in the pool")
	}
	store.View(func(tx *metadata.Tx) error {
		if _, err := tx.Device(orphan); !errdefs.IsNotFound(err) {
			t.Errorf("orphan record: %v", err)
		}
		return nil
	})
	// Unknown ids: refused while a record exists, deleted otherwise.
	if err := s.CollectUnknownDevice(ctx, live); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("collecting a recorded id as unknown: %v", err)
	}
	pool.thins[9999] = 0
	if err := s.CollectUnknownDevice(ctx, 9999); err != nil {
		t.Fatal(err)
	}
	if _, ok := pool.thins[9999]; ok {
		t.Error("unknown id still in the pool")
	}
	if _, err := s.Stat(ctx, "live"); err != nil {
		t.Errorf("live snapshot after gc: %v", err)
	}
}

func TestForgetTemplateChecksTheDevice(t *testing.T) {
	ctx := context.Background()
	s, _, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	var tp *metadata.Template
	store.View(func(tx *metadata.Tx) error {
		return tx.Templates(func(x *metadata.Template) error { tp = x; return nil })
	})
	if err := s.ForgetTemplate(ctx, tp.Name, tp.DeviceID+1); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("forgetting with the wrong device: %v", err)
	}
	if err := s.ForgetTemplate(ctx, tp.Name, tp.DeviceID); err != nil {
		t.Fatal(err)
	}
	// The next parentless Prepare makes a new template.
	if _, err := s.Prepare(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
}

func TestConfirmMissingAsksTheLivePool(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "live", ""); err != nil {
		t.Fatal(err)
	}
	var id uint32
	store.View(func(tx *metadata.Tx) error {
		rec, _ := tx.Snapshot("live")
		id = rec.DeviceID
		return nil
	})
	if err := s.ConfirmMissing(ctx, "live", id); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("a device in the pool confirmed missing: %v", err)
	}
	for name := range pool.active {
		if name != s.deviceName(id) && pool.active[name] == id {
			t.Errorf("probe device %s left active", name)
		}
	}
	if err := s.ConfirmMissing(ctx, "live", id+100); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("a record on another device confirmed: %v", err)
	}
	delete(pool.thins, id)
	if err := s.ConfirmMissing(ctx, "live", id); err != nil {
		t.Fatalf("a device gone from the pool: %v", err)
	}
	pool.fail["activate"] = errors.New("pool failed")
	if err := s.ConfirmMissing(ctx, "", id); err == nil {
		t.Fatal("a failed probe confirmed the device missing")
	}
}

// Spares of a template that is no longer the default (base size changed)
// and spares when spare_devices went to 0 are retired at start, not left
// active forever.
func TestStaleSparesAreRetiredAtStart(t *testing.T) {
	ctx := context.Background()
	_, pool, store := newSpareSnapshotter(t, 3)
	spareIDs := func() []uint32 {
		var ids []uint32
		store.View(func(tx *metadata.Tx) error {
			return tx.Devices(func(id uint32, d *metadata.Device, err error) error {
				if err == nil && d.Role == metadata.RoleSpare {
					ids = append(ids, id)
				}
				return nil
			})
		})
		return ids
	}
	old := spareIDs()
	if len(old) != 3 {
		t.Fatalf("%d spares made, want 3", len(old))
	}

	// Fewer spares wanted: the extra ones go, the rest stay.
	s1, err := New(ctx, pool, store, Config{BaseSize: 64 << 20, Spares: 1})
	if err != nil {
		t.Fatal(err)
	}
	s1.Close()
	if left := spareIDs(); len(left) != 1 {
		t.Errorf("spare_devices 1: spares %v left of %v", left, old)
	}

	// The base size changed: the old template's spares are never handed
	// out again, so they go.
	s2, err := New(ctx, pool, store, Config{BaseSize: 128 << 20, Spares: 0})
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if left := spareIDs(); len(left) != 0 {
		t.Errorf("spares of the old template left: %v", left)
	}
	pool.mu.Lock()
	defer pool.mu.Unlock()
	for _, id := range old {
		if _, ok := pool.thins[id]; ok {
			t.Errorf("spare %d still in the pool", id)
		}
		for name, a := range pool.active {
			if a == id {
				t.Errorf("spare %d still active as %s", id, name)
			}
		}
	}
}
