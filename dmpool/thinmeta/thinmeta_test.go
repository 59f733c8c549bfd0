package thinmeta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// image builds metadata blocks by hand: the layout the kernel writes,
// reduced to what Read looks at.
type image []byte

func newImage(blocks int) image { return make(image, blocks*BlockSize) }

func (im image) block(n uint64) []byte { return im[n*BlockSize : (n+1)*BlockSize] }

func (im image) superblock(n, detailsRoot uint64, sectors uint32) {
	b := im.block(n)
	binary.LittleEndian.PutUint64(b[sbMagic:], superblockMagic)
	binary.LittleEndian.PutUint64(b[sbDeviceDetailsRoot:], detailsRoot)
	binary.LittleEndian.PutUint32(b[sbDataBlockSize:], sectors)
	binary.LittleEndian.PutUint64(b[8:], n)                           // blocknr
	binary.LittleEndian.PutUint32(b[340:], 8)                         // metadata_block_size, sectors
	binary.LittleEndian.PutUint64(b[344:], uint64(len(im)/BlockSize)) // metadata_nr_blocks
	im.sealSuperblock(n)
}

func (im image) node(n uint64, flags uint32, maxE, vsize int, keys []uint64, vals [][]byte) {
	b := im.block(n)
	binary.LittleEndian.PutUint32(b[nodeFlags:], flags)
	binary.LittleEndian.PutUint64(b[nodeBlockNr:], n)
	binary.LittleEndian.PutUint32(b[nodeNrEntries:], uint32(len(keys)))
	binary.LittleEndian.PutUint32(b[nodeMaxEntries:], uint32(maxE))
	binary.LittleEndian.PutUint32(b[nodeValueSize:], uint32(vsize))
	for i, k := range keys {
		binary.LittleEndian.PutUint64(b[nodeKeys+i*8:], k)
		copy(b[nodeKeys+maxE*8+i*vsize:], vals[i])
	}
	im.sealNode(n)
}

func details(mapped, tid uint64) []byte {
	v := make([]byte, deviceDetailsSize)
	binary.LittleEndian.PutUint64(v, mapped)
	binary.LittleEndian.PutUint64(v[8:], tid)
	return v
}

func ptr(n uint64) []byte { v := make([]byte, 8); binary.LittleEndian.PutUint64(v, n); return v }

func TestReadTwoLevelTree(t *testing.T) {
	im := newImage(8)
	im.superblock(0, 99, 0) // live superblock: not what we read
	im.superblock(5, 2, 256)
	im.node(2, internalNode, 126, 8, []uint64{1, 7}, [][]byte{ptr(3), ptr(4)})
	im.node(3, leafNode, 126, deviceDetailsSize, []uint64{1, 3}, [][]byte{details(10, 1), details(0, 2)})
	im.node(4, leafNode, 126, deviceDetailsSize, []uint64{7}, [][]byte{details(4096, 5)})
	md, err := Read(bytes.NewReader(im), 5)
	if err != nil {
		t.Fatal(err)
	}
	if md.DataBlockSize != 128<<10 {
		t.Errorf("data block size %d, want 128KiB", md.DataBlockSize)
	}
	want := []Device{{1, 10, 1}, {3, 0, 2}, {7, 4096, 5}}
	if len(md.Devices) != len(want) {
		t.Fatalf("devices %+v, want %+v", md.Devices, want)
	}
	for i := range want {
		if md.Devices[i] != want[i] {
			t.Errorf("device %d: %+v, want %+v", i, md.Devices[i], want[i])
		}
	}
}

func TestReadEmptyPool(t *testing.T) {
	im := newImage(3)
	im.superblock(0, 1, 128)
	im.node(1, leafNode, 126, deviceDetailsSize, nil, nil)
	md, err := Read(bytes.NewReader(im), 0)
	if err != nil || len(md.Devices) != 0 {
		t.Fatalf("got %+v, %v; want no devices", md, err)
	}
}

func TestReadRejectsGarbage(t *testing.T) {
	cases := map[string]func(image){
		"no magic":   func(im image) {},
		"not a node": func(im image) { im.superblock(0, 1, 128) },
		"loop": func(im image) {
			im.superblock(0, 1, 128)
			im.node(1, internalNode, 10, 8, []uint64{0}, [][]byte{ptr(1)})
		},
		"wrong blocknr": func(im image) {
			im.superblock(0, 1, 128)
			im.node(1, leafNode, 10, deviceDetailsSize, nil, nil)
			binary.LittleEndian.PutUint64(im.block(1)[nodeBlockNr:], 7)
			im.sealNode(1)
		},
		"bad value size": func(im image) { im.superblock(0, 1, 128); im.node(1, leafNode, 10, 16, nil, nil) },
		"both flags": func(im image) {
			im.superblock(0, 1, 128)
			im.node(1, leafNode|internalNode, 10, 8, nil, nil)
		},
		"thin ids out of order": func(im image) {
			im.superblock(0, 1, 128)
			im.node(1, leafNode, 10, deviceDetailsSize, []uint64{4, 4}, [][]byte{details(1, 1), details(1, 1)})
		},
		"metadata block size": func(im image) {
			im.superblock(0, 1, 128)
			im.node(1, leafNode, 10, deviceDetailsSize, nil, nil)
			binary.LittleEndian.PutUint32(im.block(0)[340:], 16) // metadata_block_size
			im.sealSuperblock(0)
		},
		"too many entries": func(im image) {
			im.superblock(0, 1, 128)
			im.node(1, leafNode, 10, deviceDetailsSize, nil, nil)
			binary.LittleEndian.PutUint32(im.block(1)[nodeNrEntries:], 11)
			im.sealNode(1)
		},
	}
	for name, mk := range cases {
		im := newImage(2)
		mk(im)
		if _, err := Read(bytes.NewReader(im), 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
}
