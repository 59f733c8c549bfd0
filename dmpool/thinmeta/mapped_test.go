package thinmeta

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// blocks is extents in data blocks of bs bytes: start, length, ...
func blocks(bs uint64, sl ...uint64) []Extent {
	var e []Extent
	for i := 0; i < len(sl); i += 2 {
		e = append(e, Extent{Offset: sl[i] * bs, Length: sl[i+1] * bs})
	}
	return e
}

// The fixture as thin_dump shows it (testdata/pool.xml): device 3's 600
// blocks span the leaves of a two-level btree and come out as one
// extent; device 6 has a hole; 12 was created and never written.
func TestReadMappedRealMetadata(t *testing.T) {
	im := fixture(t)
	const bs = 64 << 10
	for dev, want := range map[uint32][]Extent{
		3:  blocks(bs, 0, 600),
		6:  blocks(bs, 0, 8, 50, 4),
		9:  blocks(bs, 10, 2),
		12: nil,
	} {
		m, err := ReadMapped(bytes.NewReader(im), 0, dev)
		if err != nil {
			t.Fatalf("device %d: %v", dev, err)
		}
		if m.DataBlockSize != bs || !reflect.DeepEqual(m.Extents, want) {
			t.Errorf("device %d: %d-byte blocks, %v; want %d, %v", dev, m.DataBlockSize, m.Extents, bs, want)
		}
	}
	// Before the first id, between two, after the last.
	for _, dev := range []uint32{1, 4, 601} {
		m, err := ReadMapped(bytes.NewReader(im), 0, dev)
		if !errors.Is(err, ErrDeviceNotFound) || !errdefs.IsNotFound(err) {
			t.Fatalf("device %d: %+v, %v; want ErrDeviceNotFound", dev, m, err)
		}
		if !strings.Contains(err.Error(), "thin device") {
			t.Errorf("device %d: %q does not name the device", dev, err)
		}
	}
}

// mappedImage: a top-level btree of an internal node (block 2) over two
// leaves, so the lookup descends. Device 1 maps virtual blocks 0-2, 7-9
// and 100 in two leaves under an internal node, the run 7-9 crossing
// from one to the other; device 2 maps nothing; device 5 maps block 3.
func mappedImage() image {
	im := newImage(12)
	im.superblock(1, 0, 128)
	im.mappingRoot(1, 2)
	im.node(2, internalNode, 250, 8, []uint64{0, 5}, ptrs(3, 4))
	im.node(3, leafNode, 250, 8, []uint64{1, 2}, ptrs(5, 8))
	im.node(4, leafNode, 250, 8, []uint64{5, 7}, ptrs(9, 10))
	im.node(5, internalNode, 250, 8, []uint64{0, 8}, ptrs(6, 7))
	im.node(6, leafNode, 250, 8, []uint64{0, 1, 2, 7}, [][]byte{mapv(50, 0), mapv(9, 0), mapv(10, 0), mapv(11, 0)})
	im.node(7, leafNode, 250, 8, []uint64{8, 9, 100}, [][]byte{mapv(12, 0), mapv(13, 1), mapv(14, 1)})
	im.node(8, leafNode, 250, 8, nil, nil)
	im.node(9, leafNode, 250, 8, []uint64{3}, [][]byte{mapv(20, 0)})
	// Device 7's btree is a loop.
	im.node(10, internalNode, 250, 8, []uint64{0}, ptrs(10))
	return im
}

func TestReadMapped(t *testing.T) {
	const bs = 64 << 10
	for dev, want := range map[uint32][]Extent{
		1: blocks(bs, 0, 3, 7, 3, 100, 1),
		2: nil,
		5: blocks(bs, 3, 1),
	} {
		m, err := ReadMapped(bytes.NewReader(mappedImage()), 1, dev)
		if err != nil {
			t.Fatalf("device %d: %v", dev, err)
		}
		if !reflect.DeepEqual(m.Extents, want) {
			t.Errorf("device %d: %v, want %v", dev, m.Extents, want)
		}
	}
	for _, dev := range []uint32{0, 3, 6, 8} {
		if _, err := ReadMapped(bytes.NewReader(mappedImage()), 1, dev); !errors.Is(err, ErrDeviceNotFound) {
			t.Errorf("device %d: %v, want ErrDeviceNotFound", dev, err)
		}
	}
}

// A corrupt tree is refused, naming the block; never a partial list.
func TestReadMappedRefusesCorruptTrees(t *testing.T) {
	cases := []struct {
		name   string
		dev    uint32
		mutate func(image)
		want   []string
	}{
		{name: "device btree loop", dev: 7, mutate: func(image) {}, want: []string{"block 10", "loop"}},
		{name: "top-level loop", dev: 1, mutate: func(im image) {
			im.node(2, internalNode, 250, 8, []uint64{0}, ptrs(2))
		}, want: []string{"block 2", "loop"}},
		{name: "keys out of order across leaves", dev: 1, mutate: func(im image) {
			im.node(7, leafNode, 250, 8, []uint64{2, 9}, [][]byte{mapv(1, 0), mapv(2, 0)})
		}, want: []string{"block 7", "virtual block 2 after 7"}},
		{name: "a key twice across leaves", dev: 1, mutate: func(im image) {
			im.node(7, leafNode, 250, 8, []uint64{7}, [][]byte{mapv(1, 0)})
		}, want: []string{"block 7", "virtual block 7 after 7"}},
		{name: "leaf checksum", dev: 1, mutate: func(im image) {
			im.block(6)[nodeKeys+8] ^= 1
		}, want: []string{"block 6", "checksum"}},
		{name: "leaf written for another block", dev: 1, mutate: func(im image) {
			im.node(7, leafNode, 250, 8, nil, nil)
			im.block(7)[nodeBlockNr] = 3
			im.sealNode(7)
		}, want: []string{"block 7", "written as block 3"}},
		{name: "24-byte values", dev: 5, mutate: func(im image) {
			im.node(9, leafNode, 126, 24, []uint64{3}, [][]byte{details(1, 1)})
		}, want: []string{"block 9", "24-byte values"}},
		{name: "virtual block out of range", dev: 5, mutate: func(im image) {
			im.node(9, leafNode, 250, 8, []uint64{1 << 60}, [][]byte{mapv(1, 0)})
		}, want: []string{"block 9", "out of range"}},
		{name: "data block size 0", dev: 5, mutate: func(im image) {
			im.superblock(1, 0, 0)
			im.mappingRoot(1, 2)
		}, want: []string{"superblock at block 1", "data block size 0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := mappedImage()
			c.mutate(im)
			m, err := ReadMapped(bytes.NewReader(im), 1, c.dev)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%+v, %v; want ErrCorrupt", m, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not say %q", err, w)
				}
			}
		})
	}
}
