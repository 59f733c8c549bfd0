package snapshotter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
)

func writeFileVia(t *testing.T, m []mount.Mount, name, content string) {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(m, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFileVia(t *testing.T, m []mount.Mount, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(m, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// spareLessSnapshotter is a snapshotter on a fresh loopback pool without
// spares, torn down (and checked) when t ends.
func spareLessSnapshotter(t *testing.T) *Snapshotter {
	t.Helper()
	dmtest.Require(t)
	sn, cleanup, err := realSnapshotterWith(context.Background(), t.TempDir(), Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	})
	return sn
}

// TestConcurrentCommitOfOneKeyOnDMThin commits one active snapshot under
// eight names at once on real dm-thin, its device busy for a moment:
// exactly one wins, the others find the key gone, no two snapshots share
// a device, and the winner holds the data.
func TestConcurrentCommitOfOneKeyOnDMThin(t *testing.T) {
	ctx := context.Background()
	sn := spareLessSnapshotter(t)
	m, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot is still mounted when the commits start, and is
	// unmounted while they retry its busy device: as when containerd's
	// unmount is released a moment late. Every commit then finds the
	// device active (ThinStatus) before any could deactivate it.
	dir := t.TempDir()
	if err := mount.All(m, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("committed once\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = sn.Commit(ctx, fmt.Sprintf("c%d", i), "a")
		}()
	}
	close(start)
	time.Sleep(300 * time.Millisecond)
	if err := mount.UnmountAll(dir, 0); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	winner := ""
	for i, err := range errs {
		switch {
		case err == nil && winner == "":
			winner = fmt.Sprintf("c%d", i)
		case err == nil:
			t.Errorf("commits as %s and c%d both succeeded", winner, i)
		case !errdefs.IsNotFound(err):
			t.Errorf("commit as c%d: %v, want not found", i, err)
		}
	}
	if winner == "" {
		t.Fatalf("no commit succeeded: %v", errs)
	}
	devices := map[uint32]string{}
	sn.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err != nil {
				return err
			}
			if other, ok := devices[rec.DeviceID]; ok {
				t.Errorf("snapshots %q and %q share device %d", other, key, rec.DeviceID)
			}
			devices[rec.DeviceID] = key
			return nil
		})
	})
	if len(devices) != 1 {
		t.Errorf("snapshots after the commits: %v, want only %s", devices, winner)
	}
	child, err := sn.View(ctx, "v", winner)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFileVia(t, child, "data"); got != "committed once\n" {
		t.Errorf("committed data %q", got)
	}
	for _, k := range []string{"v", winner} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Error(err)
		}
	}
}

// TestVanishedTemplateOnDMThin deletes the template's thin device from
// the real pool behind the snapshotter (its record still says ready): the
// next parentless Prepare makes a new template and works, instead of
// failing until gc runs.
func TestVanishedTemplateOnDMThin(t *testing.T) {
	ctx := context.Background()
	sn := spareLessSnapshotter(t)
	if _, err := sn.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	tp, err := sn.lookupTemplate(templateName("ext4", 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	if err := sn.pool.Delete(ctx, tp.DeviceID); err != nil {
		t.Fatalf("deleting the template's thin device: %v", err)
	}
	for _, k := range []string{"b", "c"} {
		m, err := sn.Prepare(ctx, k, "", snapshots.WithLabels(map[string]string{"k": k}))
		if err != nil {
			t.Fatalf("Prepare %q with the template device gone: %v", k, err)
		}
		writeFileVia(t, m, "f", k)
		if got := readFileVia(t, m, "f"); got != k {
			t.Errorf("%s: read back %q", k, got)
		}
	}
	ntp, err := sn.lookupTemplate(tp.Name)
	if err != nil || ntp.DeviceID == tp.DeviceID {
		t.Fatalf("template after healing: %+v, %v", ntp, err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Error(err)
		}
	}
}
