package snapshotter

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
)

// writeRandomVia mounts m and writes n random bytes at offset off of
// file name (created if missing, never truncated), then unmounts, which
// flushes it to the device.
func writeRandomVia(t *testing.T, m []mount.Mount, name string, off, n int64) {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(m, dir); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Fatal(err)
		}
	}()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	rand.Read(buf)
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestUsageIsExclusiveOnDMThin: a committed parent reports its own data,
// not the template's; a child that overwrites 4 MiB of its parent's file
// and writes a new 4 MiB file reports about 8 MiB, not parent + 8 MiB
// (its mapped bytes), and not the 4 MiB its mapped count grew by; a view
// that wrote nothing reports nothing.
func TestUsageIsExclusiveOnDMThin(t *testing.T) {
	ctx := context.Background()
	sn := spareLessSnapshotter(t)
	const mib = 1 << 20
	// Filesystem metadata (journal, bitmaps, inodes) a write touches
	// costs whole pool blocks on top of the data.
	const slack = 6 * mib
	within := func(what string, got, want int64) {
		t.Helper()
		if got < want || got > want+slack {
			t.Errorf("%s: usage %d bytes (%.1f MiB), want %d MiB to %d MiB", what, got, float64(got)/mib, want/mib, (want+slack)/mib)
		}
	}

	m, err := sn.Prepare(ctx, "parent-active", "")
	if err != nil {
		t.Fatal(err)
	}
	writeRandomVia(t, m, "data", 0, 16*mib)
	if err := sn.Commit(ctx, "parent", "parent-active"); err != nil {
		t.Fatal(err)
	}
	cm, err := sn.Prepare(ctx, "child", "parent")
	if err != nil {
		t.Fatal(err)
	}
	writeRandomVia(t, cm, "data", 0, 4*mib) // overwrites the parent's first 4 MiB
	writeRandomVia(t, cm, "new", 0, 4*mib)
	if _, err := sn.View(ctx, "view", "parent"); err != nil {
		t.Fatal(err)
	}

	child, err := sn.Usage(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	st, err := sn.pool.ThinStatus(ctx, sn.deviceName(recordOf(t, sn, "child").DeviceID))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("child: exclusive %d, mapped %d", child.Size, st.MappedBytes)
	within("child", child.Size, 8*mib)
	if int64(st.MappedBytes) < 20*mib {
		t.Errorf("child maps %d bytes: the test wrote less than it thinks", st.MappedBytes)
	}
	parent, err := sn.Usage(ctx, "parent")
	if err != nil {
		t.Fatal(err)
	}
	within("parent", parent.Size, 16*mib)
	if r := recordOf(t, sn, "parent"); r.ExclusiveBytes == nil || *r.ExclusiveBytes != parent.Size {
		t.Errorf("parent's figure is not recorded: %v", r.ExclusiveBytes)
	}
	view, err := sn.Usage(ctx, "view")
	if err != nil || view.Size != 0 {
		t.Errorf("view: %+v, %v; want 0", view, err)
	}

	// Another write shows once the cached figure is stale.
	sn.usage.maxAge = 0
	writeRandomVia(t, cm, "more", 0, 4*mib)
	child, err = sn.Usage(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	within("child after 4 MiB more", child.Size, 12*mib)
}
