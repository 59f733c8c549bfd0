package snapshotter

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/metadata"
)

// fakeOriginDevice makes originDevice the identity for the test: the
// fake pool's origins are paths, not device numbers.
func fakeOriginDevice(t *testing.T) {
	saved := originDevice
	originDevice = func(path string) (string, error) { return path, nil }
	t.Cleanup(func() { originDevice = saved })
}

// A live device that no record names (the reaper is removing it, or a
// crash left it) but whose table reads the old device is moved too, so
// closing the old device cannot fail it or, were its number reused,
// feed it another image; a device whose record names another origin is
// left alone; and one that cannot be moved fails the switch, so that
// lazy keeps the old device.
func TestSwitchOriginMovesDevicesWithoutRecords(t *testing.T) {
	ctx := context.Background()
	fakeOriginDevice(t)
	s, pool, store, o := newOriginSnapshotter(t)
	s.pool = listingPool{fakePool: pool}
	if _, err := s.Prepare(ctx, "fill", "", lazyLabels("img-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "fill"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "c1", "base"); err != nil {
		t.Fatal(err)
	}
	o.set("img-2", "/dev/nbd0")
	if _, err := s.Prepare(ctx, "other", "", lazyLabels("img-2")); err != nil {
		t.Fatal(err)
	}
	pool.mu.Lock()
	pool.thins[900] = 0
	pool.active["orphan"] = 900
	pool.origins["orphan"] = "/dev/nbd0"
	pool.mu.Unlock()

	o.set("img-1", "/dev/loop7")
	if err := s.SwitchOrigin(ctx, "img-1", "/dev/nbd0", "/dev/loop7"); err != nil {
		t.Fatal(err)
	}
	devOf := func(key string) string {
		var rec *metadata.Snapshot
		store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot(key); return err })
		return s.deviceName(rec.DeviceID)
	}
	for dev, want := range map[string]string{devOf("c1"): "/dev/loop7", "orphan": "/dev/loop7", devOf("other"): "/dev/nbd0"} {
		if got := pool.origins[dev]; got != want {
			t.Errorf("%s: origin %q after the switch, want %q", dev, got, want)
		}
	}

	pool.mu.Lock()
	pool.thins[901] = 0
	pool.active["orphan2"] = 901
	pool.origins["orphan2"] = "/dev/loop7"
	pool.mu.Unlock()
	pool.setFailing("reload-origin", fmt.Errorf("boom"))
	err := s.SwitchOrigin(ctx, "img-1", "/dev/loop7", "/dev/loop8")
	if err == nil || !strings.Contains(err.Error(), "orphan2") {
		t.Fatalf("switch with a device left on the old one: %v, want an error naming orphan2", err)
	}
}
