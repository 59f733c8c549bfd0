package snapshotter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
)

// TestConcurrentLifecycleOnDMThin runs many container-style lifecycles at
// once against one committed base: Prepare a child, write into it, Commit
// or View it, Remove everything. Afterwards only the template and the
// spares may be left, nothing active but the spares.
func TestConcurrentLifecycleOnDMThin(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	sn, cleanup, err := realSnapshotter(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	writeMount := func(m []mount.Mount, name, content string) {
		dir := t.TempDir()
		if err := mount.All(m, dir); err != nil {
			t.Error(err)
			return
		}
		defer mount.UnmountAll(dir, 0)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Error(err)
		}
	}
	m, err := sn.Prepare(ctx, "base-active", "")
	if err != nil {
		t.Fatal(err)
	}
	writeMount(m, "base", "base\n")
	if err := sn.Commit(ctx, "base", "base-active"); err != nil {
		t.Fatal(err)
	}

	const workers = 32
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			key := fmt.Sprintf("c%d", i)
			m, err := sn.Prepare(ctx, key, "base")
			if err != nil {
				t.Errorf("prepare %s: %v", key, err)
				return
			}
			writeMount(m, key, key)
			if i%2 == 0 {
				if err := sn.Commit(ctx, key+"-committed", key); err != nil {
					t.Errorf("commit %s: %v", key, err)
					return
				}
				key += "-committed"
				if _, err := sn.View(ctx, key+"-view", key); err != nil {
					t.Errorf("view of %s: %v", key, err)
					return
				}
				if err := sn.Remove(ctx, key+"-view"); err != nil {
					t.Errorf("remove view of %s: %v", key, err)
				}
			}
			if err := sn.Remove(ctx, key); err != nil {
				t.Errorf("remove %s: %v", key, err)
			}
		}(i)
	}
	wg.Wait()
	if err := sn.Remove(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	if err := sn.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}

	var left []string
	sn.store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(id uint32, d *metadata.Device, err error) error {
			if err != nil || (d.Role != metadata.RoleTemplate && d.Role != metadata.RoleSpare) {
				left = append(left, fmt.Sprintf("%d:%v", id, d))
			}
			return nil
		})
	})
	if len(left) > 0 {
		t.Errorf("device records left after every snapshot was removed: %v", left)
	}
	active, err := sn.pool.(*dmpool.Pool).ListActive(ctx)
	if err != nil || len(active) != sn.spares.count() {
		t.Errorf("active devices left besides %d spares: %+v (%v)", sn.spares.count(), active, err)
	}
	n := 0
	sn.Walk(ctx, func(context.Context, snapshots.Info) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d snapshots left", n)
	}
}
