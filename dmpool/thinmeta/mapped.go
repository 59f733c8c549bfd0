package thinmeta

import (
	"fmt"
	"io"

	"github.com/containerd/errdefs"
)

// Extent is a run of mapped bytes of a thin device, at virtual offsets.
type Extent struct {
	Offset, Length uint64
}

// Mapped is what ReadMapped found for one device.
type Mapped struct {
	// DataBlockSize is the pool's data block size in bytes: every
	// extent starts and ends on a multiple of it.
	DataBlockSize uint64
	// Extents are the device's mapped ranges, sorted by offset, with
	// adjacent ones coalesced: a read outside them returns zeros.
	Extents []Extent
}

// ErrDeviceNotFound means the thin id is not in the pool's mapping
// btree (never created, or deleted). It wraps errdefs.ErrNotFound.
var ErrDeviceNotFound = fmt.Errorf("not in the pool metadata: %w", errdefs.ErrNotFound)

// ReadMapped lists the mapped virtual ranges of thin device dev from the
// mapping btrees under the superblock at block sb (a held metadata
// snapshot root, as for ReadExclusive). Publishing a block image reads
// only these ranges: everything else of the device reads as zeros.
//
// The device's mappings include the blocks it shares with its origin or
// snapshots: a snapshot maps what its origin mapped when it was taken.
// The device's root is looked up as the kernel does (one path down the
// top-level btree) and its btree walked whole; keys must ascend across
// leaves, so the extents come out sorted and a tree that repeats a key
// is refused.
func ReadMapped(r io.ReaderAt, sb uint64, dev uint32) (*Mapped, error) {
	buf := make([]byte, BlockSize)
	super, err := readSuperblock(r, sb, buf)
	if err != nil {
		return nil, err
	}
	bs := super.dataBlockSize
	if bs == 0 {
		return nil, corrupt("superblock", sb, "data block size 0")
	}
	root, found, err := lookupRoot(r, super.dataMappingRoot, uint64(dev), buf)
	if err != nil {
		return nil, fmt.Errorf("thin device btree: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("thin device %d: %w", dev, ErrDeviceNotFound)
	}
	m := &Mapped{DataBlockSize: bs}
	var next uint64 // the first virtual block a key may have
	err = walkNodes(r, root, map[uint64]bool{}, 0, nil, func(n *node) (bool, error) {
		if !n.leaf {
			return true, nil
		}
		for _, k := range n.keys {
			if k < next {
				return false, corrupt(mappingNode, n.block, "virtual block %d after %d", k, next-1)
			}
			// The byte offset of the end of the block must fit
			// (the kernel's thin devices are at most 2^64 sectors).
			if k >= (1<<64-1)/bs {
				return false, corrupt(mappingNode, n.block, "virtual block %d out of range", k)
			}
			if e := len(m.Extents) - 1; e >= 0 && k == next {
				m.Extents[e].Length += bs
			} else {
				m.Extents = append(m.Extents, Extent{Offset: k * bs, Length: bs})
			}
			next = k + 1
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("thin device %d: %w", dev, err)
	}
	return m, nil
}

// lookupRoot finds dev's mapping btree root in the top-level btree under
// top, descending as dm_btree_lookup does: in an internal node the child
// whose first key is the greatest not above dev, in a leaf an exact key.
func lookupRoot(r io.ReaderAt, top, dev uint64, buf []byte) (root uint64, found bool, _ error) {
	block := top
	seen := map[uint64]bool{}
	for depth := 0; ; depth++ {
		if depth > maxDepth || seen[block] {
			return 0, false, fmt.Errorf("%w: btree loop or too deep at block %d", ErrCorrupt, block)
		}
		seen[block] = true
		n, err := readNode(r, block, buf)
		if err != nil {
			return 0, false, err
		}
		i := len(n.keys) - 1 // keys ascend: readNode checks
		for i >= 0 && n.keys[i] > dev {
			i--
		}
		if i < 0 || n.leaf && n.keys[i] != dev {
			return 0, false, nil
		}
		if n.leaf {
			return n.vals[i], true, nil
		}
		block = n.vals[i]
	}
}
