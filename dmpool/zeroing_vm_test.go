package dmpool

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNewDeviceNeverReadsDeletedData is tenant isolation on the raw
// device: a device that wrote a pattern over the whole pool is deleted,
// then a new device writes 4 KiB into each 128 KiB block and reads the
// rest of every block. With skip_block_zeroing (the old default) that rest
// is the deleted device's data; with zeroing it must be zeros. The pool is
// small and the first device fills it, so dm-thin's allocation cursor comes
// round and hands every freed block out again.
//
// The first phase (zeroing off) shows the test detects a leak; the second
// reopens the same, active pool with zeroing on, which must reload its
// table (what a daemon start does to an existing pool), and finds none.
func TestNewDeviceNeverReadsDeletedData(t *testing.T) {
	const poolSize = 32 * mib
	// One block short of the pool: the device that fills it never has an
	// allocation refused, and the cursor still wraps onto freed blocks.
	const devSize = poolSize - 128<<10
	ctx := context.Background()
	p, cfg := newTestPoolWith(t, poolSize, func(c *Config) { c.SkipBlockZeroing = true })
	if f := poolFeatures(t, cfg.Name); !slices.Contains(f, "skip_block_zeroing") {
		t.Fatalf("pool opened with SkipBlockZeroing has features %v", f)
	}
	leaked, blocks := leakedBlocks(t, p, 1, 2, devSize)
	t.Logf("skip_block_zeroing: %d of %d new blocks show the deleted device's data", leaked, blocks)
	if leaked == 0 {
		t.Fatalf("with skip_block_zeroing no block leaked: the test cannot detect a leak (pool reused no freed block?)")
	}

	cfg.SkipBlockZeroing = false
	p, res, err := Open(ctx, cfg)
	if err != nil || res != Found {
		t.Fatalf("reopen of the active pool with zeroing: %s, %v", res, err)
	}
	if f := poolFeatures(t, cfg.Name); slices.Contains(f, "skip_block_zeroing") || !slices.Contains(f, "error_if_no_space") {
		t.Fatalf("active pool has features %v after Open with zeroing, want error_if_no_space only", f)
	}
	leaked, blocks = leakedBlocks(t, p, 3, 4, devSize)
	if leaked != 0 {
		t.Fatalf("zero_new_blocks: %d of %d new blocks show the deleted device's data", leaked, blocks)
	}
	t.Logf("zeroing: 0 of %d new blocks show the deleted device's data", blocks)
}

func poolFeatures(t *testing.T, name string) []string {
	t.Helper()
	ts, err := Table(name)
	if err != nil || len(ts) != 1 {
		t.Fatalf("table of %s: %v %v", name, ts, err)
	}
	pt, err := parsePoolTable(ts[0].Params)
	if err != nil {
		t.Fatal(err)
	}
	return pt.Features
}

// leakedBlocks writes a pattern over all of thin a (size bytes), deletes
// it, then writes 4 KiB at the start of each block of a new thin b and
// counts the blocks whose other bytes are not zero. Both devices are
// deleted afterwards. All I/O is O_DIRECT: what is read is what the pool
// maps, not the page cache.
func leakedBlocks(t *testing.T, p *Pool, a, b uint32, size int64) (leaked, blocks int) {
	t.Helper()
	ctx := context.Background()
	bs := int(p.BlockSize())
	buf := alignedBuf(t, bs)
	for i := range buf {
		buf[i] = 0xA5
	}
	withThin(t, p, a, size, func(f *os.File) {
		for off := int64(0); off < size; off += int64(bs) {
			if _, err := f.WriteAt(buf, off); err != nil {
				t.Fatalf("thin %d: write pattern at %d: %v", a, off, err)
			}
		}
	})
	if err := p.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	head := buf[:4096]
	withThin(t, p, b, size, func(f *os.File) {
		for i := range head {
			head[i] = 0x11
		}
		for off := int64(0); off < size; off += int64(bs) {
			if _, err := f.WriteAt(head, off); err != nil {
				t.Fatalf("thin %d: write 4KiB at %d: %v", b, off, err)
			}
		}
		zero := make([]byte, bs-len(head))
		for off := int64(0); off < size; off += int64(bs) {
			if _, err := f.ReadAt(buf, off); err != nil {
				t.Fatalf("thin %d: read block at %d: %v", b, off, err)
			}
			blocks++
			if !bytes.Equal(buf[len(head):], zero) {
				leaked++
			}
		}
	})
	if err := p.Delete(ctx, b); err != nil {
		t.Fatal(err)
	}
	return leaked, blocks
}

// withThin creates and activates thin id of size bytes, runs fn on it
// opened O_DIRECT, and deactivates it.
func withThin(t *testing.T, p *Pool, id uint32, size int64, fn func(*os.File)) {
	t.Helper()
	ctx := context.Background()
	if err := p.CreateThin(ctx, id); err != nil {
		t.Fatal(err)
	}
	name := randName("fimt-zero")
	path, err := p.Activate(ctx, name, id, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	fn(f)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := p.Deactivate(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// alignedBuf is n bytes of page-aligned memory, as O_DIRECT needs.
func alignedBuf(t *testing.T, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}
