package snapshotter

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/metadata"
)

func devicesIn(t *testing.T, store *metadata.Store, state metadata.DeviceState) []*metadata.Device {
	t.Helper()
	var ds []*metadata.Device
	store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil && d.State == state {
				ds = append(ds, d)
			}
			return nil
		})
	})
	return ds
}

// TestTemplateOutlivesCancelledCaller cancels the first parentless
// Prepare while the template is being formatted: that caller gets its
// error, but the template is finished (not orphaned) and the next Prepare
// uses it.
func TestTemplateOutlivesCancelledCaller(t *testing.T) {
	s, pool, store := newTestSnapshotter(t)
	formatting, release := make(chan struct{}), make(chan struct{})
	var formats atomic.Int32
	s.format = func(ctx context.Context, _, _ string) error {
		if formats.Add(1) > 1 {
			return nil
		}
		close(formatting)
		// Like mkfs under exec.CommandContext: killed when ctx ends.
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := s.Prepare(ctx, "first", ""); errc <- err }()
	<-formatting
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Prepare: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled caller still waits for the template")
	}
	close(release)
	if _, err := s.Prepare(context.Background(), "second", ""); err != nil {
		t.Fatalf("Prepare after the cancelled one: %v", err)
	}
	if n := formats.Load(); n != 1 {
		t.Errorf("the template was formatted %d times, want once", n)
	}
	if o := devicesIn(t, store, metadata.DeviceOrphaned); len(o) > 0 {
		t.Errorf("orphaned devices: %+v (the cancelled caller's template)", o[0])
	}
	checkConsistent(t, s, pool)
}

// TestVanishedTemplateHeals deletes the template's thin id from the pool
// behind the snapshotter's back (its record still says ready): the next
// parentless Prepare makes a new template instead of failing until gc.
func TestVanishedTemplateHeals(t *testing.T) {
	ctx := context.Background()
	s, pool, store := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	tp, err := s.lookupTemplate(templateName("ext4", 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	delete(pool.thins, tp.DeviceID)
	for _, k := range []string{"b", "c"} {
		if _, err := s.Prepare(ctx, k, ""); err != nil {
			t.Fatalf("Prepare %q with the template device gone: %v", k, err)
		}
	}
	ntp, err := s.lookupTemplate(tp.Name)
	if err != nil || ntp.DeviceID == tp.DeviceID {
		t.Fatalf("template after healing: %+v, %v", ntp, err)
	}
	if _, ok := pool.thins[ntp.DeviceID]; !ok {
		t.Fatalf("new template device %d not in the pool", ntp.DeviceID)
	}
	if o := devicesIn(t, store, metadata.DeviceOrphaned); len(o) != 1 || o[0].ID != tp.DeviceID {
		t.Errorf("orphaned devices %+v, want only the vanished template %d", o, tp.DeviceID)
	}
	checkConsistent(t, s, pool)
}
