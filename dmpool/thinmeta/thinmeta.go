// Package thinmeta reads the list of thin devices, and how many data
// blocks each maps, from a dm-thin pool's on-disk metadata.
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
package thinmeta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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

// ErrCorrupt means a block did not look like thin-pool metadata.
var ErrCorrupt = errors.New("thin-pool metadata is not readable")

// Read walks the device-details btree of the superblock at block sb of
// the metadata device r (the held root of a reserved metadata snapshot;
// 0 is the live superblock, which is only consistent while the pool is
// not active).
func Read(r io.ReaderAt, sb uint64) (*Metadata, error) {
	buf := make([]byte, BlockSize)
	if err := readBlock(r, sb, buf); err != nil {
		return nil, err
	}
	if m := binary.LittleEndian.Uint64(buf[sbMagic:]); m != superblockMagic {
		return nil, fmt.Errorf("%w: block %d has superblock magic %d, want %d", ErrCorrupt, sb, m, superblockMagic)
	}
	md := &Metadata{DataBlockSize: uint64(binary.LittleEndian.Uint32(buf[sbDataBlockSize:])) * 512}
	root := binary.LittleEndian.Uint64(buf[sbDeviceDetailsRoot:])
	seen := map[uint64]bool{}
	if err := walk(r, root, buf, seen, 0, func(key uint64, v []byte) error {
		if key > 1<<24-1 {
			return fmt.Errorf("%w: thin id %d out of range", ErrCorrupt, key)
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

func walk(r io.ReaderAt, block uint64, buf []byte, seen map[uint64]bool, depth int, fn func(uint64, []byte) error) error {
	if depth > maxDepth || seen[block] {
		return fmt.Errorf("%w: btree loop or too deep at block %d", ErrCorrupt, block)
	}
	seen[block] = true
	if err := readBlock(r, block, buf); err != nil {
		return err
	}
	flags := binary.LittleEndian.Uint32(buf[nodeFlags:])
	nr := int(binary.LittleEndian.Uint32(buf[nodeNrEntries:]))
	maxE := int(binary.LittleEndian.Uint32(buf[nodeMaxEntries:]))
	vsize := int(binary.LittleEndian.Uint32(buf[nodeValueSize:]))
	if bn := binary.LittleEndian.Uint64(buf[nodeBlockNr:]); bn != block {
		return fmt.Errorf("%w: block %d says it is block %d", ErrCorrupt, block, bn)
	}
	if nr > maxE || nodeKeys+maxE*(8+vsize) > BlockSize {
		return fmt.Errorf("%w: btree node %d has %d/%d entries of %d bytes", ErrCorrupt, block, nr, maxE, vsize)
	}
	valuesAt := nodeKeys + maxE*8
	switch {
	case flags&internalNode != 0:
		if vsize != 8 {
			return fmt.Errorf("%w: internal node %d has %d-byte values", ErrCorrupt, block, vsize)
		}
		children := make([]uint64, nr)
		for i := range children {
			children[i] = binary.LittleEndian.Uint64(buf[valuesAt+i*8:])
		}
		for _, c := range children {
			if err := walk(r, c, buf, seen, depth+1, fn); err != nil {
				return err
			}
		}
		return nil
	case flags&leafNode != 0:
		if vsize != deviceDetailsSize {
			return fmt.Errorf("%w: device-details leaf %d has %d-byte values, want %d", ErrCorrupt, block, vsize, deviceDetailsSize)
		}
		for i := 0; i < nr; i++ {
			key := binary.LittleEndian.Uint64(buf[nodeKeys+i*8:])
			if err := fn(key, buf[valuesAt+i*vsize:valuesAt+(i+1)*vsize]); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: block %d is not a btree node (flags %#x)", ErrCorrupt, block, flags)
}

func readBlock(r io.ReaderAt, block uint64, buf []byte) error {
	if _, err := r.ReadAt(buf, int64(block)*BlockSize); err != nil {
		return fmt.Errorf("reading metadata block %d: %w", block, err)
	}
	return nil
}
