package thinmeta

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/harness"
)

// TestReadPoolOnRealDmThin lists a real pool holding 300 thin ids (more
// than one btree leaf holds, so the walk goes through an internal node),
// with data written to two of them, while the pool stays active; and
// again while a metadata snapshot is already held by someone else.
func TestReadPoolOnRealDmThin(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	pool, cfg := harness.LoopPool(t, fmt.Sprintf("fim-thinmeta-%d", os.Getpid()), 1<<30, 16<<20)
	const n = 300
	for id := uint32(1); id <= n; id++ {
		if err := pool.CreateThin(ctx, id*3); err != nil { // sparse ids
			t.Fatal(err)
		}
	}
	write := func(id uint32, bytes int) {
		harness.WriteThin(t, pool, fmt.Sprintf("%s-w%d", cfg.Name, id), id, 64<<20, func(f *os.File) error {
			_, err := f.Write(make([]byte, bytes))
			return err
		})
	}
	write(3, 1<<20)     // 8 blocks of 128KiB
	write(900, 3<<20+1) // 25 blocks; left active

	check := func(what string) {
		t.Helper()
		md, err := ReadPool(ctx, cfg.Name)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if md.DataBlockSize != 128<<10 {
			t.Errorf("%s: block size %d", what, md.DataBlockSize)
		}
		if len(md.Devices) != n {
			t.Fatalf("%s: %d devices, want %d", what, len(md.Devices), n)
		}
		mapped := map[uint32]uint64{}
		for i, d := range md.Devices {
			if d.ID != uint32(i+1)*3 {
				t.Fatalf("%s: device %d has id %d, want %d", what, i, d.ID, (i+1)*3)
			}
			mapped[d.ID] = d.MappedBlocks
		}
		if mapped[3] != 8 || mapped[900] != 25 || mapped[6] != 0 {
			t.Errorf("%s: mapped blocks 3:%d 900:%d 6:%d, want 8, 25, 0", what, mapped[3], mapped[900], mapped[6])
		}
	}
	check("first read")
	check("second read (no stale cached blocks)")
	if err := pool.Delete(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if err := pool.CreateThin(ctx, 6); err != nil {
		t.Fatal(err)
	}
	// Someone else holds a metadata snapshot: its view may be older
	// than anything the caller knows, so it is refused, and stays held.
	if _, err := dmpool.Message(cfg.Name, "reserve_metadata_snap"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPool(ctx, cfg.Name); !errors.Is(err, ErrSnapshotHeld) {
		t.Errorf("read with a snapshot held elsewhere: %v; want ErrSnapshotHeld", err)
	}
	st, err := pool.Status(ctx)
	if err != nil || st.HeldMetadataRoot == "-" {
		t.Errorf("the other holder's snapshot was released (%v)", err)
	}
	if was, err := Release(cfg.Name); err != nil || was == "-" {
		t.Fatalf("release: %q, %v", was, err)
	}
	check("after the release")
	if st, _ := pool.Status(ctx); st.HeldMetadataRoot != "-" {
		t.Errorf("a metadata snapshot is still held: %s", st.HeldMetadataRoot)
	}
}
