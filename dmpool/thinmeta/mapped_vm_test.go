package thinmeta

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/harness"
)

// TestReadPoolMappedOnRealDmThin writes byte ranges at chosen offsets of
// a thin device, some not block-aligned and one of 512 blocks (several
// btree leaves), and reads back exactly those ranges rounded out to data
// blocks; a snapshot of it maps the same, and what the snapshot then
// writes shows in its ranges and not in its origin's.
func TestReadPoolMappedOnRealDmThin(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	pool, cfg := harness.LoopPool(t, fmt.Sprintf("fim-mapped-%d", os.Getpid()), 1<<30, 16<<20)
	const (
		bs   = 128 << 10
		size = 256 << 20
		mib  = 1 << 20
	)
	write := func(id uint32, ranges ...[2]int64) {
		t.Helper()
		name := fmt.Sprintf("%s-w%d", cfg.Name, id)
		harness.WriteThin(t, pool, name, id, size, func(f *os.File) error {
			for _, r := range ranges {
				if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, int(r[1]-r[0])), r[0]); err != nil {
					return err
				}
			}
			return nil
		})
		// Inactive, so the snapshot is of what was synced.
		if err := pool.Deactivate(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	read := func(id uint32) []Extent {
		t.Helper()
		m, err := ReadPoolMapped(ctx, cfg.Name, id)
		if err != nil {
			t.Fatalf("device %d: %v", id, err)
		}
		if m.DataBlockSize != bs {
			t.Fatalf("block size %d", m.DataBlockSize)
		}
		return m.Extents
	}
	if err := pool.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := read(1); len(got) != 0 {
		t.Errorf("new device: %v, want nothing mapped", got)
	}
	write(1,
		[2]int64{0, 4096},                     // block 0
		[2]int64{mib + 5, 3*mib - 7},          // blocks 8-23
		[2]int64{8 * mib, 72 * mib},           // blocks 64-575
		[2]int64{100*mib - 4096, 100*mib + 1}, // blocks 799-800
		[2]int64{size - 4096, size},           // block 2047
	)
	want := []Extent{
		{0, bs},
		{mib, 2 * mib},
		{8 * mib, 64 * mib},
		{799 * bs, 2 * bs},
		{size - bs, bs},
	}
	if got := read(1); !reflect.DeepEqual(got, want) {
		t.Errorf("device 1: %v, want %v", got, want)
	}

	if err := pool.CreateSnapshot(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	if got := read(2); !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot: %v, want its origin's %v", got, want)
	}
	// An overwrite inside a mapped block maps nothing new; block 1000
	// is new, and only the snapshot's.
	write(2, [2]int64{4096, 8192}, [2]int64{1000 * bs, 1000*bs + 1})
	snap := append(append(append([]Extent{}, want[:4]...), Extent{1000 * bs, bs}), want[4])
	if got := read(2); !reflect.DeepEqual(got, snap) {
		t.Errorf("snapshot after writing: %v, want %v", got, snap)
	}
	if got := read(1); !reflect.DeepEqual(got, want) {
		t.Errorf("origin after the snapshot wrote: %v, want %v", got, want)
	}

	if _, err := ReadPoolMapped(ctx, cfg.Name, 3); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("device 3: %v, want ErrDeviceNotFound", err)
	}
	if st, _ := pool.Status(ctx); st.HeldMetadataRoot != "-" {
		t.Errorf("a metadata snapshot is still held: %s", st.HeldMetadataRoot)
	}
}
