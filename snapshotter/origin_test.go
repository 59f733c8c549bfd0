package snapshotter

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/metadata"
)

// fakeOrigins maps origin names to device paths.
type fakeOrigins struct {
	mu   sync.Mutex
	devs map[string]string
}

func (o *fakeOrigins) DevicePath(name string) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d, ok := o.devs[name]; ok {
		return d, nil
	}
	return "", fmt.Errorf("origin %q: %w", name, errdefs.ErrNotFound)
}

func (o *fakeOrigins) set(name, dev string) {
	o.mu.Lock()
	o.devs[name] = dev
	o.mu.Unlock()
}

func newOriginSnapshotter(t *testing.T) (*Snapshotter, *fakePool, *metadata.Store, *fakeOrigins) {
	t.Helper()
	s, pool, store := newTestSnapshotter(t)
	o := &fakeOrigins{devs: map[string]string{"img-1": "/dev/nbd0"}}
	s.cfg.Origins = o
	fakeOriginSizes(t, nil)
	return s, pool, store, o
}

// fakeOriginSizes makes originSize answer from sizes, and the size of
// lazyLabels for any other path: the fake's origins are no devices.
func fakeOriginSizes(t *testing.T, sizes map[string]uint64) {
	saved := originSize
	originSize = func(path string) (uint64, error) {
		if n, ok := sizes[path]; ok {
			return n, nil
		}
		return 134217728, nil
	}
	t.Cleanup(func() { originSize = saved })
}

func lazyLabels(origin string) snapshots.Opt {
	return snapshots.WithLabels(map[string]string{
		LabelBlank: "ext4", LabelExternalOrigin: origin, snapshots.LabelSnapshotMaxSize: "134217728",
	})
}

func TestExternalOriginIsInheritedBySnapshots(t *testing.T) {
	ctx := context.Background()
	s, pool, store, _ := newOriginSnapshotter(t)
	if _, err := s.Prepare(ctx, "fill", "", lazyLabels("img-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "fill"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "ctr", "base"); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "layer2", "ctr"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, "view", "layer2"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"base", "layer2", "view"} {
		var rec *metadata.Snapshot
		store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot(key); return err })
		if rec.ExternalOrigin != "img-1" {
			t.Fatalf("%s: external origin %q, want img-1", key, rec.ExternalOrigin)
		}
	}
	var view *metadata.Snapshot
	store.View(func(tx *metadata.Tx) (err error) { view, err = tx.Snapshot("view"); return err })
	if got := pool.origins[s.deviceName(view.DeviceID)]; got != "/dev/nbd0" {
		t.Fatalf("view's table has origin %q, want /dev/nbd0", got)
	}
	used, err := s.OriginsInUse()
	if err != nil || !used["img-1"] || len(used) != 1 {
		t.Fatalf("in use: %v, %v", used, err)
	}
}

func TestExternalOriginLabelIsChecked(t *testing.T) {
	ctx := context.Background()
	s, _, _, _ := newOriginSnapshotter(t)
	for name, opt := range map[string]snapshots.Opt{
		"not blank":      snapshots.WithLabels(map[string]string{LabelExternalOrigin: "img-1"}),
		"bad name":       lazyLabels("../img"),
		"unknown origin": lazyLabels("img-2"),
	} {
		_, err := s.Prepare(ctx, name, "", opt)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if name == "unknown origin" && !errdefs.IsNotFound(err) || name != "unknown origin" && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	s.cfg.Origins = nil
	if _, err := s.Prepare(ctx, "none", "", lazyLabels("img-1")); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("no origins configured: %v", err)
	}
}

func TestSwitchOriginReloadsLiveDevices(t *testing.T) {
	ctx := context.Background()
	s, pool, store, o := newOriginSnapshotter(t)
	if _, err := s.Prepare(ctx, "fill", "", lazyLabels("img-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "fill"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"c1", "c2"} {
		if _, err := s.Prepare(ctx, k, "base"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Prepare(ctx, "plain", ""); err != nil {
		t.Fatal(err)
	}
	o.set("img-1", "/dev/loop7")
	if err := s.SwitchOrigin(ctx, "img-1", "/dev/nbd0", "/dev/loop7"); err != nil {
		t.Fatal(err)
	}
	devOf := func(key string) string {
		var rec *metadata.Snapshot
		store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot(key); return err })
		return s.deviceName(rec.DeviceID)
	}
	for _, k := range []string{"c1", "c2"} {
		if got := pool.origins[devOf(k)]; got != "/dev/loop7" {
			t.Fatalf("%s: origin %q after the switch", k, got)
		}
	}
	if _, ok := pool.origins[devOf("plain")]; ok {
		t.Fatal("a snapshot without an origin was given one")
	}
	// A failed reload is reported, naming the device.
	pool.setFailing("reload-origin", fmt.Errorf("boom"))
	if err := s.SwitchOrigin(ctx, "img-1", "/dev/loop7", "/dev/loop8"); err == nil {
		t.Fatal("a failed reload was not reported")
	}
}

// A device live on an older device of its origin (the daemon restarted
// and attached the origin again) is moved onto the current one when it
// is activated, instead of being quarantined as "exists with another
// table".
func TestActivateMovesADeviceOntoTheCurrentOriginDevice(t *testing.T) {
	ctx := context.Background()
	s, pool, store, o := newOriginSnapshotter(t)
	if _, err := s.Prepare(ctx, "fill", "", lazyLabels("img-1")); err != nil {
		t.Fatal(err)
	}
	var rec *metadata.Snapshot
	store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot("fill"); return err })
	o.set("img-1", "/dev/nbd3")
	if _, err := s.activate(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if got := pool.origins[s.deviceName(rec.DeviceID)]; got != "/dev/nbd3" {
		t.Fatalf("origin %q, want /dev/nbd3", got)
	}
	if pool.callCount("reload-origin") != 1 {
		t.Fatalf("%d reloads, want 1", pool.callCount("reload-origin"))
	}
}

// An origin device whose size is not the image's (a dead nbd device
// cleared to 0 bytes, an index reused for another image) is refused by
// activate, for a new table and for a reload, and by SwitchOrigin,
// naming the device; the table keeps the device it had.
func TestOriginOfAnotherSizeIsRefused(t *testing.T) {
	ctx := context.Background()
	s, pool, store, o := newOriginSnapshotter(t)
	fakeOriginSizes(t, map[string]uint64{"/dev/nbd5": 0, "/dev/nbd6": 64 << 20})
	if _, err := s.Prepare(ctx, "fill", "", lazyLabels("img-1")); err != nil {
		t.Fatal(err)
	}
	var rec *metadata.Snapshot
	store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot("fill"); return err })
	name := s.deviceName(rec.DeviceID)
	for _, dev := range []string{"/dev/nbd5", "/dev/nbd6"} {
		o.set("img-1", dev)
		_, err := s.activate(ctx, rec)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), dev) {
			t.Fatalf("activate (reload) onto %s: %v, want ErrFailedPrecondition naming it", dev, err)
		}
		if err := s.SwitchOrigin(ctx, "img-1", "/dev/nbd0", dev); err == nil || !strings.Contains(err.Error(), dev) {
			t.Fatalf("SwitchOrigin onto %s: %v, want an error naming it", dev, err)
		}
		if got := pool.origins[name]; got != "/dev/nbd0" {
			t.Fatalf("after the refusals the table names %q, want /dev/nbd0", got)
		}
	}
	if err := pool.Deactivate(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.activate(ctx, rec); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("activate of an inactive device onto a wrong-size origin: %v", err)
	}
	if _, ok := pool.origins[name]; ok {
		t.Fatal("the device was activated anyway")
	}
}
