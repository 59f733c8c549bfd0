package thinmeta

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Every metadata block the kernel writes starts with a crc32c of the
// rest of the block, salted per block type, and the number of the block
// it was written to. The kernel checks both on every read (sb_check in
// dm-thin-metadata.c, node_check in persistent-data/dm-btree-spine.c);
// so must we: without them a torn write, a bit flip or a block written
// to the wrong place parses as a plausible btree, and gc would judge
// which thin ids exist from it.
const (
	superblockCsumXor = 160774 // SUPERBLOCK_CSUM_XOR
	btreeCsumXor      = 121107 // BTREE_CSUM_XOR
)

// Offsets shared by struct thin_disk_superblock and struct node_header.
const (
	blockCsum    = 0
	blockBlockNr = 8
)

// sbMetadataBlockSize is metadata_block_size in struct
// thin_disk_superblock, in 512-byte sectors: always BlockSize, the only
// size the kernel writes.
const sbMetadataBlockSize = 340

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockChecksum is the kernel's dm_bm_checksum over the block after its
// csum field: crc32c seeded with ~0 and, unlike Go's, not inverted at
// the end, then XOR'd with the block type's salt.
func blockChecksum(b []byte, xor uint32) uint32 {
	return ^crc32.Checksum(b[blockCsum+4:], castagnoli) ^ xor
}

// corrupt is the error for a block that fails a check: what the block
// was read as, where, and what is wrong with it.
func corrupt(what string, block uint64, format string, args ...any) error {
	return fmt.Errorf("%w: %s at block %d: %s", ErrCorrupt, what, block, fmt.Sprintf(format, args...))
}

// checkSum compares the block's checksum with the one it carries.
func checkSum(what string, block uint64, b []byte, xor uint32) error {
	onDisk := binary.LittleEndian.Uint32(b[blockCsum:])
	if sum := blockChecksum(b, xor); sum != onDisk {
		return corrupt(what, block, "checksum %#08x, computed %#08x (a torn, corrupt or overwritten block)", onDisk, sum)
	}
	return nil
}

// checkBlockNr refuses a block written for another place: whole, but a
// misdirected or stale write.
func checkBlockNr(what string, block uint64, b []byte) error {
	if bn := binary.LittleEndian.Uint64(b[blockBlockNr:]); bn != block {
		return corrupt(what, block, "it was written as block %d", bn)
	}
	return nil
}

// superblock is what Read and ReadExclusive use of a checked superblock.
type superblock struct {
	dataBlockSize     uint64 // bytes
	deviceDetailsRoot uint64
	dataMappingRoot   uint64
}

// readSuperblock reads the superblock at block and checks it as sb_check
// does (block number, magic, checksum) and that its metadata blocks are
// of BlockSize.
func readSuperblock(r io.ReaderAt, block uint64, buf []byte) (*superblock, error) {
	const what = "superblock"
	if err := readBlock(r, block, buf); err != nil {
		return nil, err
	}
	if err := checkBlockNr(what, block, buf); err != nil {
		return nil, err
	}
	if m := binary.LittleEndian.Uint64(buf[sbMagic:]); m != superblockMagic {
		return nil, corrupt(what, block, "magic %d, want %d", m, superblockMagic)
	}
	if err := checkSum(what, block, buf, superblockCsumXor); err != nil {
		return nil, err
	}
	if s := binary.LittleEndian.Uint32(buf[sbMetadataBlockSize:]); s != BlockSize/512 {
		return nil, corrupt(what, block, "metadata block size %d sectors, want %d", s, BlockSize/512)
	}
	return &superblock{
		dataBlockSize:     uint64(binary.LittleEndian.Uint32(buf[sbDataBlockSize:])) * 512,
		deviceDetailsRoot: binary.LittleEndian.Uint64(buf[sbDeviceDetailsRoot:]),
		dataMappingRoot:   binary.LittleEndian.Uint64(buf[sbDataMappingRoot:]),
	}, nil
}

// nodeHeader is a checked struct node_header.
type nodeHeader struct {
	leaf       bool
	nrEntries  int
	maxEntries int
	valueSize  int
}

// valuesAt is the offset of the node's first value.
func (h nodeHeader) valuesAt() int { return nodeKeys + h.maxEntries*8 }

// readNodeHeader reads the btree node at block and checks it as
// node_check does: block number, checksum, entries that fit the block,
// a leaf or an internal node. what names the btree for the error.
func readNodeHeader(r io.ReaderAt, what string, block uint64, buf []byte) (nodeHeader, error) {
	if err := readBlock(r, block, buf); err != nil {
		return nodeHeader{}, err
	}
	if err := checkBlockNr(what, block, buf); err != nil {
		return nodeHeader{}, err
	}
	if err := checkSum(what, block, buf, btreeCsumXor); err != nil {
		return nodeHeader{}, err
	}
	flags := binary.LittleEndian.Uint32(buf[nodeFlags:])
	h := nodeHeader{
		leaf:       flags&leafNode != 0,
		nrEntries:  int(binary.LittleEndian.Uint32(buf[nodeNrEntries:])),
		maxEntries: int(binary.LittleEndian.Uint32(buf[nodeMaxEntries:])),
		valueSize:  int(binary.LittleEndian.Uint32(buf[nodeValueSize:])),
	}
	// In uint64: the fields are any 32-bit values.
	if uint64(nodeKeys)+uint64(h.maxEntries)*(8+uint64(h.valueSize)) > BlockSize || h.nrEntries > h.maxEntries {
		return nodeHeader{}, corrupt(what, block, "%d of at most %d entries of %d bytes do not fit a block", h.nrEntries, h.maxEntries, h.valueSize)
	}
	// The kernel writes one of the two flags; its own readers disagree
	// on a node with both (a lookup reads it as a leaf, a walk as
	// internal), so it is refused.
	switch flags & (internalNode | leafNode) {
	case internalNode:
		if h.valueSize != 8 {
			return nodeHeader{}, corrupt(what, block, "internal node with %d-byte values, want 8", h.valueSize)
		}
	case leafNode:
	default:
		return nodeHeader{}, corrupt(what, block, "not a leaf or an internal node (flags %#x)", flags)
	}
	return h, nil
}
