// Package thinmeta reads the list of thin devices, how many data blocks
// each maps and which of its virtual ranges (mapped.go), from a dm-thin
// pool's on-disk metadata.
//
// The kernel has no ioctl that lists the thin ids of a pool, and probing
// ids by activating them costs an ioctl round trip per id ever handed out
// (ids are never reused, so that grows without bound). Instead the pool is
// asked to reserve a metadata snapshot (the "reserve_metadata_snap"
// message, the same one thin_ls and thin_dump --metadata-snap rely on):
// the kernel commits, copies the superblock to a block it will not touch
// again until the snapshot is released, and reports that block as the
// "held metadata root" in its status. The device-details btree under that
// copy is frozen, so it can be read from the metadata device while the
// pool stays live. That btree is a single-level btree of 64-bit thin ids
// to 24-byte records whose first field is the number of mapped data
// blocks, so a reader is a few dozen lines and needs no external tool.
//
// Every block is checked as the kernel checks it before any of it is
// used (block.go): the superblock's block number, magic and checksum,
// and each btree node's block number, checksum and layout. A view that
// fails one is refused whole (ErrCorrupt): gc judges which thin ids
// exist from it, so a torn or corrupt view must never parse on.
package thinmeta

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
)

// BlockSize is the size of a thin-pool metadata block.
const BlockSize = 4096

// superblockMagic sits at byte 32 of a thin-pool superblock.
const superblockMagic = 27022010

// Layout of struct thin_disk_superblock (drivers/md/dm-thin-metadata.c).
const (
	sbMagic             = 32
	sbDeviceDetailsRoot = 328
	sbDataBlockSize     = 336 // in 512-byte sectors
)

// Layout of struct node_header (drivers/md/persistent-data/dm-btree-internal.h).
const (
	nodeFlags      = 4
	nodeBlockNr    = 8
	nodeNrEntries  = 16
	nodeMaxEntries = 20
	nodeValueSize  = 24
	nodeKeys       = 32

	internalNode = 1
	leafNode     = 2

	// deviceDetailsSize is struct disk_device_details: mapped_blocks,
	// transaction_id (le64), creation_time, snapshotted_time (le32).
	deviceDetailsSize = 24
)

// Device is one thin device recorded in the pool metadata.
type Device struct {
	ID uint32
	// MappedBlocks is the number of data blocks the device maps,
	// including blocks it shares with snapshots of it or its origin.
	MappedBlocks uint64
	// TransactionID is the pool transaction that last changed it.
	TransactionID uint64
}

// Metadata is what Read found under one superblock.
type Metadata struct {
	// DataBlockSize is the pool's data block size in bytes.
	DataBlockSize uint64
	Devices       []Device
}

// ErrCorrupt means a block did not pass the checks the kernel makes of
// it (its checksum, the block number it was written for, its magic or
// its layout), or the btree under it did not hold together. Nothing read
// from such a view is returned. It wraps errdefs.ErrDataLoss.
var ErrCorrupt = fmt.Errorf("thin-pool metadata is not readable: %w", errdefs.ErrDataLoss)

// Read walks the device-details btree of the superblock at block sb of
// the metadata device r (the held root of a reserved metadata snapshot;
// 0 is the live superblock, which is only consistent while the pool is
// not active). Every block is checked as the kernel checks it before a
// byte of it is used.
func Read(r io.ReaderAt, sb uint64) (*Metadata, error) {
	buf := make([]byte, BlockSize)
	super, err := readSuperblock(r, sb, buf)
	if err != nil {
		return nil, err
	}
	md := &Metadata{DataBlockSize: super.dataBlockSize}
	seen := map[uint64]bool{}
	if err := walk(r, super.deviceDetailsRoot, buf, seen, 0, func(block, key uint64, v []byte) error {
		if key > 1<<24-1 {
			return corrupt(detailsNode, block, "thin id %d out of range", key)
		}
		// The walk visits keys in order: one out of order or twice
		// is not a btree the kernel wrote.
		if n := len(md.Devices); n > 0 && key <= uint64(md.Devices[n-1].ID) {
			return corrupt(detailsNode, block, "thin id %d after %d", key, md.Devices[n-1].ID)
		}
		md.Devices = append(md.Devices, Device{
			ID:            uint32(key),
			MappedBlocks:  binary.LittleEndian.Uint64(v[0:]),
			TransactionID: binary.LittleEndian.Uint64(v[8:]),
		})
		return nil
	}); err != nil {
		return nil, err
	}
	return md, nil
}

// maxDepth bounds the btree walk; a pool's device btree with 2^24 ids is
// at most 5 levels deep.
const maxDepth = 16

// detailsNode names a device-details btree node in errors.
const detailsNode = "device-details btree node"

func walk(r io.ReaderAt, block uint64, buf []byte, seen map[uint64]bool, depth int, fn func(block, key uint64, v []byte) error) error {
	if depth > maxDepth || seen[block] {
		return fmt.Errorf("%w: btree loop or too deep at block %d", ErrCorrupt, block)
	}
	seen[block] = true
	h, err := readNodeHeader(r, detailsNode, block, buf)
	if err != nil {
		return err
	}
	if !h.leaf {
		children := make([]uint64, h.nrEntries)
		for i := range children {
			children[i] = binary.LittleEndian.Uint64(buf[h.valuesAt()+i*8:])
		}
		for _, c := range children {
			if err := walk(r, c, buf, seen, depth+1, fn); err != nil {
				return err
			}
		}
		return nil
	}
	if h.valueSize != deviceDetailsSize {
		return corrupt(detailsNode, block, "leaf with %d-byte values, want %d", h.valueSize, deviceDetailsSize)
	}
	for i := 0; i < h.nrEntries; i++ {
		key := binary.LittleEndian.Uint64(buf[nodeKeys+i*8:])
		v := h.valuesAt() + i*h.valueSize
		if err := fn(block, key, buf[v:v+h.valueSize]); err != nil {
			return err
		}
	}
	return nil
}

func readBlock(r io.ReaderAt, block uint64, buf []byte) error {
	if _, err := r.ReadAt(buf, int64(block)*BlockSize); err != nil {
		return fmt.Errorf("reading metadata block %d: %w", block, err)
	}
	return nil
}
