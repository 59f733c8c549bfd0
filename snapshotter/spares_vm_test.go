package snapshotter

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
)

// TestStaleSparesAreRetiredOnDMThin: spares of a template that is no
// longer the default (the base size changed, spares set to 0) are
// deactivated and deleted from the pool at the next start, on real
// dm-thin; they used to stay active forever (issue 10 A3).
func TestStaleSparesAreRetiredOnDMThin(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	sn, pool, cleanup, err := realSnapshotterSized(ctx, t.TempDir(), Config{BaseSize: 64 << 20, Spares: 2}, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	})
	store := sn.store
	spares := func() (ids []uint32, names []string) {
		store.View(func(tx *metadata.Tx) error {
			return tx.Devices(func(id uint32, d *metadata.Device, err error) error {
				if err == nil && d.Role == metadata.RoleSpare {
					ids, names = append(ids, id), append(names, d.Name)
				}
				return nil
			})
		})
		return ids, names
	}
	var ids []uint32
	var names []string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if ids, names = spares(); len(ids) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spares made: %v, want 2", ids)
		}
	}
	sn.Close()

	sn2, err := New(ctx, pool, store, Config{BaseSize: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	sn2.Close()
	if left, _ := spares(); len(left) != 0 {
		t.Errorf("spare records left after the base size changed: %v", left)
	}
	active, err := pool.ListActive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range active {
		if slices.Contains(names, d.Name) {
			t.Errorf("retired spare %s is still active", d.Name)
		}
	}
	md, err := thinmeta.ReadPool(ctx, pool.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range md.Devices {
		if slices.Contains(ids, d.ID) {
			t.Errorf("retired spare's thin id %d is still in the pool (%s)", d.ID, strings.Join(names, ", "))
		}
	}
}
