package thinmeta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func (im image) mappingRoot(sb, root uint64) {
	binary.LittleEndian.PutUint64(im.block(sb)[sbDataMappingRoot:], root)
	im.sealSuperblock(sb)
}

// mapv is a bottom-level mapping value: data block and time.
func mapv(data, time uint64) []byte { return ptr(data<<24 | time) }

func ptrs(ns ...uint64) [][]byte {
	v := make([][]byte, len(ns))
	for i, n := range ns {
		v[i] = ptr(n)
	}
	return v
}

// countingReader counts the blocks read.
type countingReader struct {
	r     *bytes.Reader
	reads map[int64]int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads[off/BlockSize]++
	return c.r.ReadAt(p, off)
}

// exclusiveImage is a pool whose parent (thin id 1) maps virtual
// blocks 0-3 and 10-13; its snapshot (2) shares the first leaf node and
// has its own copy of the second, where it overwrote block 11 (new data
// block), kept 10, 12 and 13, and added 20. Device 3 is a snapshot of 2
// that changed nothing (it is 2's root). Device 4 is a create_thin with
// two blocks.
func exclusiveImage() image {
	im := newImage(20)
	im.superblock(1, 0, 128)
	im.mappingRoot(1, 2)
	im.node(2, leafNode, 250, 8, []uint64{1, 2, 3, 4}, ptrs(3, 6, 6, 9))
	// Parent: internal node 3 over leaves 4 and 5.
	im.node(3, internalNode, 250, 8, []uint64{0, 10}, ptrs(4, 5))
	im.node(4, leafNode, 250, 8, []uint64{0, 1, 2, 3}, [][]byte{mapv(100, 0), mapv(101, 0), mapv(102, 0), mapv(103, 0)})
	im.node(5, leafNode, 250, 8, []uint64{10, 11, 12, 13}, [][]byte{mapv(110, 0), mapv(111, 0), mapv(112, 0), mapv(113, 0)})
	// Child: its own internal node 6 over the shared leaf 4 and its own 7.
	im.node(6, internalNode, 250, 8, []uint64{0, 10}, ptrs(4, 7))
	im.node(7, leafNode, 250, 8, []uint64{10, 11, 12, 13, 20},
		[][]byte{mapv(110, 0), mapv(200, 1), mapv(112, 0), mapv(113, 0), mapv(201, 1)})
	// Device 4: a lone leaf.
	im.node(9, leafNode, 250, 8, []uint64{0, 5}, [][]byte{mapv(300, 2), mapv(301, 2)})
	return im
}

func TestReadExclusiveCountsOnlyWhatTheOriginDoesNotShare(t *testing.T) {
	c := &countingReader{r: bytes.NewReader(exclusiveImage()), reads: map[int64]int{}}
	u, err := ReadExclusive(c, 1, []Pair{
		{Device: 1}, // the parent, created with create_thin
		{Device: 2, Origin: 1, HasOrigin: true},
		{Device: 3, Origin: 2, HasOrigin: true},
		{Device: 4},
		{Device: 5, Origin: 1, HasOrigin: true}, // not in the pool
		{Device: 2, Origin: 9, HasOrigin: true}, // origin gone: all its own
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.DataBlockSize != 64<<10 {
		t.Errorf("block size %d", u.DataBlockSize)
	}
	want := map[uint32]Exclusive{
		1: {Blocks: 8},
		// 11 overwritten, 20 added; 10, 12, 13 and leaf 4 shared.
		2: {Blocks: 9, OriginFound: false}, // overwritten below by the origin-9 pair
		3: {Blocks: 0, OriginFound: true},
		4: {Blocks: 2},
	}
	if _, ok := u.Devices[5]; ok {
		t.Errorf("device 5 is not in the pool but has %+v", u.Devices[5])
	}
	for id, w := range want {
		if g := u.Devices[id]; g != w {
			t.Errorf("device %d: %+v, want %+v", id, g, w)
		}
	}
	// The shared leaf 4 is the parent's: never read for the child.
	u, err = ReadExclusive(c, 1, []Pair{{Device: 2, Origin: 1, HasOrigin: true}})
	if err != nil {
		t.Fatal(err)
	}
	if g := u.Devices[2]; g != (Exclusive{Blocks: 2, OriginFound: true}) {
		t.Errorf("child of 1: %+v, want 2 blocks (11 overwritten, 20 added)", g)
	}
}

func TestReadExclusiveSkipsSharedNodes(t *testing.T) {
	c := &countingReader{r: bytes.NewReader(exclusiveImage()), reads: map[int64]int{}}
	if _, err := ReadExclusive(c, 1, []Pair{{Device: 2, Origin: 1, HasOrigin: true}}); err != nil {
		t.Fatal(err)
	}
	// Once: the origin's first leaf, read to learn the tree's height.
	if c.reads[4] > 1 {
		t.Errorf("the leaf the child shares with its origin was read %d times, want at most once", c.reads[4])
	}
}

func TestReadExclusiveRefusesCorruptTrees(t *testing.T) {
	im := exclusiveImage()
	// The child's leaf points back at its internal node: a loop.
	im.node(7, internalNode, 250, 8, []uint64{10}, ptrs(6))
	if _, err := ReadExclusive(bytes.NewReader(im), 1, []Pair{{Device: 2, Origin: 1, HasOrigin: true}}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("loop: %v, want ErrCorrupt", err)
	}
	im = exclusiveImage()
	im.node(5, leafNode, 250, 8, []uint64{12, 11}, [][]byte{mapv(1, 0), mapv(2, 0)})
	if _, err := ReadExclusive(bytes.NewReader(im), 1, []Pair{{Device: 2, Origin: 1, HasOrigin: true}}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("keys out of order: %v, want ErrCorrupt", err)
	}
	im = exclusiveImage()
	im.node(5, leafNode, 250, 24, []uint64{10}, [][]byte{details(1, 1)})
	if _, err := ReadExclusive(bytes.NewReader(im), 1, []Pair{{Device: 2, Origin: 1, HasOrigin: true}}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("24-byte values: %v, want ErrCorrupt", err)
	}
}
