package snapshotter

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestDiscardBlocksShrinksThePoolFile removes a snapshot that wrote 32 MiB
// and measures the loopback data file's allocated blocks before and after.
// With discard_blocks the file gives the space back (dm-thin passes the
// discard down to the loop device, which punches a hole); without it the
// file keeps it, which is what the test shows first so that it can fail.
func TestDiscardBlocksShrinksThePoolFile(t *testing.T) {
	dmtest.Require(t)
	const written = 32 << 20
	for _, discard := range []bool{false, true} {
		ctx := context.Background()
		sn, cleanup, err := realSnapshotterWith(ctx, t.TempDir(), Config{BaseSize: 64 << 20, DiscardBlocks: discard})
		if err != nil {
			t.Fatal(err)
		}
		// realSnapshotterWith keeps the pool files in <tmp>/<pool name>-*/.
		files, _ := filepath.Glob(filepath.Join(os.TempDir(), sn.pool.Name()+"-*", "data"))
		if len(files) != 1 {
			cleanup()
			t.Fatalf("data file of pool %s: %v", sn.pool.Name(), files)
		}
		m, err := sn.Prepare(ctx, "written", "")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := mount.All(m, dir); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, written)
		rand.Read(data)
		err = os.WriteFile(filepath.Join(dir, "blob"), data, 0o644)
		// The unmount writes the file's blocks to the thin device.
		if uerr := mount.UnmountAll(dir, 0); err == nil {
			err = uerr
		}
		if err != nil {
			t.Fatal(err)
		}
		before := allocated(t, files[0])
		if err := sn.Remove(ctx, "written"); err != nil {
			t.Fatal(err)
		}
		// The discard is part of the dm work Cleanup finishes.
		if err := sn.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		after := allocated(t, files[0])
		t.Logf("discard_blocks=%v: data file %d KiB allocated before Remove, %d KiB after", discard, before>>10, after>>10)
		freed := before - after
		switch {
		case discard && freed < written*3/4:
			t.Errorf("discard_blocks: Remove gave back %d KiB of the %d KiB the snapshot wrote", freed>>10, written>>10)
		case !discard && freed > written/4:
			t.Errorf("without discard_blocks the file shrank by %d KiB: the measurement is not measuring discards", freed>>10)
		}
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}
}

// allocated is the bytes of disk the file uses (st_blocks).
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
