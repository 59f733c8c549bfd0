package thinmeta

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// testdata/pool.meta.gz is real thin-pool metadata, written by
// thin-provisioning-tools rather than by this package, so that the
// checksums checked here are the kernel's format and not our reading of
// it:
//
//	truncate -s 1M pool.meta
//	thin_restore -i testdata/pool.xml -o pool.meta   # thin_check passes
//	gzip -9 < pool.meta > testdata/pool.meta.gz
//
// pool.xml: 200 thin ids 3, 6, ... 600 (a device-details btree of an
// internal node, block 6, over leaves 18, 19 and 20); device 3 maps 600
// blocks (a two-level mapping btree), device 6 maps 12, 8 of them to the
// same data blocks as device 3, device 9 maps 2. The top-level mapping
// btree is the leaf at block 7.
func fixture(t *testing.T) image {
	t.Helper()
	f, err := os.Open("testdata/pool.meta.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return image(b)
}

// kernelChecksum is dm_bm_checksum(block + 4, 4092, xor), written out
// here apart from the package's so the hand-built images of the other
// tests do not depend on the code they test.
func kernelChecksum(b []byte, xor uint32) uint32 {
	return ^crc32.Checksum(b[4:], crc32.MakeTable(crc32.Castagnoli)) ^ xor
}

// seal writes block n's checksum, as the kernel does before writing it.
func (im image) seal(n uint64, xor uint32) {
	b := im.block(n)
	binary.LittleEndian.PutUint32(b, kernelChecksum(b, xor))
}

func (im image) sealNode(n uint64)       { im.seal(n, 121107) }
func (im image) sealSuperblock(n uint64) { im.seal(n, 160774) }

func (im image) u64(n uint64, off int) uint64 { return binary.LittleEndian.Uint64(im.block(n)[off:]) }

// mappingRootOf is device id's mapping btree root in the fixture, from
// the top-level leaf.
func (im image) mappingRootOf(t *testing.T, id uint64) uint64 {
	t.Helper()
	top := im.u64(0, sbDataMappingRoot)
	b := im.block(top)
	nr := int(binary.LittleEndian.Uint32(b[nodeNrEntries:]))
	maxE := int(binary.LittleEndian.Uint32(b[nodeMaxEntries:]))
	for i := 0; i < nr; i++ {
		if binary.LittleEndian.Uint64(b[nodeKeys+i*8:]) == id {
			return binary.LittleEndian.Uint64(b[nodeKeys+maxE*8+i*8:])
		}
	}
	t.Fatalf("device %d not in the fixture's top-level mapping leaf %d", id, top)
	return 0
}

var fixturePairs = []Pair{{Device: 3}, {Device: 6, Origin: 3, HasOrigin: true}, {Device: 9}}

// The fixture reads as thin_dump and thin_ls see it: the checksums the
// tools wrote are the ones Read and ReadExclusive compute.
func TestReadRealMetadata(t *testing.T) {
	im := fixture(t)
	md, err := Read(bytes.NewReader(im), 0)
	if err != nil {
		t.Fatal(err)
	}
	if md.DataBlockSize != 64<<10 || len(md.Devices) != 200 {
		t.Fatalf("block size %d, %d devices; want 64KiB and 200", md.DataBlockSize, len(md.Devices))
	}
	for i, d := range md.Devices {
		if d.ID != uint32(i+1)*3 || d.TransactionID != uint64(i+1) {
			t.Fatalf("device %d: %+v", i, d)
		}
	}
	if m := []uint64{md.Devices[0].MappedBlocks, md.Devices[1].MappedBlocks, md.Devices[2].MappedBlocks}; m[0] != 600 || m[1] != 12 || m[2] != 2 {
		t.Errorf("mapped blocks of 3, 6, 9: %v, want 600, 12, 2", m)
	}
	u, err := ReadExclusive(bytes.NewReader(im), 0, fixturePairs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]Exclusive{3: {Blocks: 600}, 6: {Blocks: 4, OriginFound: true}, 9: {Blocks: 2}}
	for id, w := range want {
		if g := u.Devices[id]; g != w {
			t.Errorf("device %d: %+v, want %+v", id, g, w)
		}
	}
}

// One byte wrong anywhere in a block either reader uses, or a block
// that is whole but was written for another place (a misdirected or
// stale write), and the view is refused, naming the block and what is
// wrong: gc must never judge which thin ids exist from it.
func TestReadRefusesCorruptRealMetadata(t *testing.T) {
	flip := func(n uint64, off int) func(*testing.T, image) {
		return func(_ *testing.T, im image) { im.block(n)[off] ^= 0x01 }
	}
	cases := []struct {
		name   string
		mutate func(*testing.T, image)
		// exclusive: read with ReadExclusive, else Read.
		exclusive bool
		want      []string
	}{
		// A byte of the data space map root: neither reader uses it,
		// and both parsed on.
		{name: "superblock byte", mutate: flip(0, 100), want: []string{"superblock at block 0", "checksum"}},
		{name: "superblock byte (exclusive)", mutate: flip(0, 100), exclusive: true, want: []string{"superblock at block 0", "checksum"}},
		{name: "superblock written for another block", mutate: func(_ *testing.T, im image) {
			binary.LittleEndian.PutUint64(im.block(0)[8:], 9)
			im.sealSuperblock(0)
		}, want: []string{"superblock at block 0", "block 9"}},
		{name: "superblock magic", mutate: func(_ *testing.T, im image) {
			binary.LittleEndian.PutUint64(im.block(0)[sbMagic:], 1)
			im.sealSuperblock(0)
		}, want: []string{"superblock at block 0", "magic"}},
		// The internal node's first key: the walk never looks at it.
		{name: "device-details internal node byte", mutate: flip(6, nodeKeys), want: []string{"block 6", "checksum"}},
		// The low byte of the sixth thin id in the first leaf: 18
		// would read as 19, and device 18 would seem gone.
		{name: "device-details leaf key", mutate: flip(18, nodeKeys+5*8), want: []string{"block 18", "checksum"}},
		{name: "device-details leaf value", mutate: flip(18, nodeKeys+126*8), want: []string{"block 18", "checksum"}},
		{name: "top-level mapping leaf", mutate: flip(7, nodeKeys+2*8), exclusive: true, want: []string{"block 7", "checksum"}},
		{name: "device mapping leaf value", exclusive: true, mutate: func(t *testing.T, im image) {
			// Virtual block 0, which device 6 shares with device 3: it
			// would count as its own.
			root := im.mappingRootOf(t, 6)
			maxE := int(binary.LittleEndian.Uint32(im.block(root)[nodeMaxEntries:]))
			im.block(root)[nodeKeys+maxE*8+3] ^= 0x01
		}, want: []string{"checksum"}},
		{name: "node written for another block", mutate: func(_ *testing.T, im image) {
			binary.LittleEndian.PutUint64(im.block(19)[nodeBlockNr:], 4)
			im.sealNode(19)
		}, want: []string{"block 19", "block 4"}},
		{name: "mapping node written for another block", exclusive: true, mutate: func(t *testing.T, im image) {
			root := im.mappingRootOf(t, 9)
			binary.LittleEndian.PutUint64(im.block(root)[nodeBlockNr:], 4)
			im.sealNode(root)
		}, want: []string{"block 4"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := fixture(t)
			c.mutate(t, im)
			var err error
			if c.exclusive {
				var u *Usage
				u, err = ReadExclusive(bytes.NewReader(im), 0, fixturePairs)
				if err == nil {
					t.Fatalf("read on: %+v", u.Devices)
				}
			} else {
				var md *Metadata
				md, err = Read(bytes.NewReader(im), 0)
				if err == nil {
					t.Fatalf("read on: %d devices, first %+v", len(md.Devices), md.Devices[:3])
				}
			}
			if !errors.Is(err, ErrCorrupt) || !errdefs.IsDataLoss(err) {
				t.Errorf("err %v: want ErrCorrupt, a data-loss error", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not say %q", err, w)
				}
			}
		})
	}
}
