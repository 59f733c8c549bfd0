package lazy

import (
	"fmt"
	"math/bits"
	"os"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// bitmap is the "present" file: bit i (byte i/8, bit i%8) says chunk i of
// the manifest is in the cache file and on disk. It is set only after the
// chunk's bytes were written and fdatasynced, and written as one byte
// with pwrite, which no crash can tear, then fdatasynced itself. It is
// never cleared: a chunk's bytes do not change.
type bitmap struct {
	f     *os.File
	mu    sync.Mutex // serializes marks: two chunks may share a byte
	bits  []byte
	n     int // chunks
	count int // bits set
}

// bitmapSize is the size of the present file for n chunks.
func bitmapSize(n int) int64 { return int64((n + 7) / 8) }

// loadBitmap reads the present file for n chunks. A file of another size,
// or with bits set beyond chunk n-1, is not ours to guess about: the
// origin is broken.
func loadBitmap(f *os.File, n int) (*bitmap, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if want := bitmapSize(n); fi.Size() != want {
		return nil, fmt.Errorf("present bitmap is %d bytes, want %d for %d chunks: %w", fi.Size(), want, n, errdefs.ErrDataLoss)
	}
	b := &bitmap{f: f, bits: make([]byte, bitmapSize(n)), n: n}
	if _, err := f.ReadAt(b.bits, 0); err != nil && len(b.bits) > 0 {
		return nil, fmt.Errorf("reading the present bitmap: %w", err)
	}
	if r := n % 8; r != 0 && b.bits[len(b.bits)-1]>>r != 0 {
		return nil, fmt.Errorf("present bitmap has bits set beyond its %d chunks: %w", n, errdefs.ErrDataLoss)
	}
	for _, x := range b.bits {
		b.count += bits.OnesCount8(x)
	}
	return b, nil
}

func (b *bitmap) has(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bits[i/8]&(1<<(i%8)) != 0
}

// mark records chunk i as present, durably, before it returns. The bit
// is set in memory only once the byte is on disk, so a failed mark leaves
// the chunk missing (it is fetched again) rather than present on disk in
// a state nothing remembers.
func (b *bitmap) mark(i int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	bit := byte(1 << (i % 8))
	if b.bits[i/8]&bit != 0 {
		return nil
	}
	v := b.bits[i/8] | bit
	if _, err := b.f.WriteAt([]byte{v}, int64(i/8)); err != nil {
		return fmt.Errorf("writing the present bitmap: %w", err)
	}
	if err := unix.Fdatasync(int(b.f.Fd())); err != nil {
		return fmt.Errorf("syncing the present bitmap: %w", err)
	}
	b.bits[i/8] = v
	b.count++
	return nil
}

func (b *bitmap) present() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}

func (b *bitmap) complete() bool { return b.present() == b.n }
