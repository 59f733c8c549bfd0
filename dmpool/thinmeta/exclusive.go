package thinmeta

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// sbDataMappingRoot is the offset of data_mapping_root in struct
// thin_disk_superblock: the root of the two-level btree thin id ->
// (virtual block -> data block << 24 | time).
const sbDataMappingRoot = 320

// mappingValueSize is the size of every value in the mapping btrees: a
// child block number in internal nodes and in the top level's leaves, a
// packed data block and time in the bottom level's leaves.
const mappingValueSize = 8

// Pair names a thin device and the thin id it was snapshotted from.
type Pair struct {
	Device uint32
	// Origin is the device's origin; ignored when HasOrigin is false
	// (a create_thin device shares nothing).
	Origin    uint32
	HasOrigin bool
}

// Exclusive is what ReadExclusive found for one device.
type Exclusive struct {
	// Blocks is the number of data blocks the device maps that its
	// origin does not map to the same data block at the same virtual
	// block: what the device would free if its origin stayed.
	Blocks uint64
	// OriginFound says the origin was in the pool; when false, every
	// mapped block is counted as the device's own.
	OriginFound bool
}

// Usage is what ReadExclusive returns.
type Usage struct {
	// DataBlockSize is the pool's data block size in bytes.
	DataBlockSize uint64
	// Devices holds an entry for every asked device present in the pool.
	Devices map[uint32]Exclusive
}

// ReadExclusive counts, for each pair, the data blocks the device maps
// that its origin does not share, reading the mapping btrees under the
// superblock at block sb (a held metadata snapshot root).
//
// A thin snapshot starts as a second root over its origin's btree nodes;
// a write copies only the nodes on the path to the changed mapping. So a
// node both trees reference (the same metadata block) holds the same
// mappings in both and is skipped unread. Only the device's own leaves
// are read, and each of their entries is looked up in the origin (the
// origin's internal nodes give the key ranges, so only the origin leaves
// covering those entries are read): the cost follows what the device
// changed, not its size, and memory is a few blocks per tree level.
func ReadExclusive(r io.ReaderAt, sb uint64, pairs []Pair) (*Usage, error) {
	super, err := readSuperblock(r, sb, make([]byte, BlockSize))
	if err != nil {
		return nil, err
	}
	u := &Usage{
		DataBlockSize: super.dataBlockSize,
		Devices:       map[uint32]Exclusive{},
	}
	roots := map[uint64]uint64{} // thin id -> root of its mapping btree
	if err := walkNodes(r, super.dataMappingRoot, map[uint64]bool{}, 0, nil, func(n *node) (bool, error) {
		if n.leaf {
			for i := range n.keys {
				roots[n.keys[i]] = n.vals[i]
			}
		}
		return true, nil
	}); err != nil {
		return nil, fmt.Errorf("thin device btree: %w", err)
	}
	// The origin's node set, from its internal nodes only (their values
	// are the block numbers of its leaves): one per origin.
	originNodes := map[uint32]map[uint64]bool{}
	for _, p := range pairs {
		root, ok := roots[uint64(p.Device)]
		if !ok {
			continue // not in the pool (any more)
		}
		var shared map[uint64]bool
		var oroot uint64
		var e Exclusive
		if p.HasOrigin {
			if oroot, e.OriginFound = roots[uint64(p.Origin)]; e.OriginFound {
				if shared = originNodes[p.Origin]; shared == nil {
					var err error
					if shared, err = nodeSet(r, oroot); err != nil {
						return nil, fmt.Errorf("thin device %d (origin of %d): %w", p.Origin, p.Device, err)
					}
					originNodes[p.Origin] = shared
				}
			}
		}
		// A node of the origin's own is skipped unread: every mapping
		// under it is shared.
		isShared := func(b uint64) bool { return shared[b] }
		err := walkNodes(r, root, map[uint64]bool{}, 0, isShared, func(n *node) (bool, error) {
			if !n.leaf {
				return true, nil
			}
			if !e.OriginFound {
				e.Blocks += uint64(len(n.keys))
				return true, nil
			}
			same, err := countSame(r, oroot, n.keys, n.vals)
			if err != nil {
				return false, fmt.Errorf("origin %d: %w", p.Origin, err)
			}
			e.Blocks += uint64(len(n.keys)) - same
			return true, nil
		})
		if err != nil {
			return nil, fmt.Errorf("thin device %d: %w", p.Device, err)
		}
		u.Devices[p.Device] = e
	}
	return u, nil
}

// node is one parsed btree node.
type node struct {
	block uint64
	leaf  bool
	keys  []uint64
	vals  []uint64
}

// mappingNode names a mapping btree node in errors.
const mappingNode = "mapping btree node"

// readNode reads and checks block as a mapping btree node.
func readNode(r io.ReaderAt, block uint64, buf []byte) (*node, error) {
	h, err := readNodeHeader(r, mappingNode, block, buf)
	if err != nil {
		return nil, err
	}
	if h.valueSize != mappingValueSize {
		return nil, corrupt(mappingNode, block, "%d-byte values, want %d", h.valueSize, mappingValueSize)
	}
	n := &node{block: block, leaf: h.leaf, keys: make([]uint64, h.nrEntries), vals: make([]uint64, h.nrEntries)}
	for i := 0; i < h.nrEntries; i++ {
		n.keys[i] = binary.LittleEndian.Uint64(buf[nodeKeys+i*8:])
		n.vals[i] = binary.LittleEndian.Uint64(buf[h.valuesAt()+i*8:])
		if i > 0 && n.keys[i] <= n.keys[i-1] {
			return nil, corrupt(mappingNode, block, "keys out of order")
		}
	}
	return n, nil
}

// walkNodes visits the btree under block depth first; fn returns false
// to skip a node's children, skip(block) true skips a node unread.
// seen refuses a loop.
func walkNodes(r io.ReaderAt, block uint64, seen map[uint64]bool, depth int, skip func(uint64) bool, fn func(*node) (bool, error)) error {
	if skip != nil && skip(block) {
		return nil
	}
	if depth > maxDepth || seen[block] {
		return fmt.Errorf("%w: btree loop or too deep at block %d", ErrCorrupt, block)
	}
	seen[block] = true
	n, err := readNode(r, block, make([]byte, BlockSize))
	if err != nil {
		return err
	}
	descend, err := fn(n)
	if err != nil || !descend || n.leaf {
		return err
	}
	for _, c := range n.vals {
		if err := walkNodes(r, c, seen, depth+1, skip, fn); err != nil {
			return err
		}
	}
	return nil
}

// nodeSet returns the block numbers of the nodes of the btree under
// root. Leaves are not read: their numbers are in the internal nodes
// above them, and a dm btree is balanced, so once the first child of a
// node is a leaf all its children are. The set only lets ReadExclusive
// skip work: a node missing from it is read and compared entry by entry.
func nodeSet(r io.ReaderAt, root uint64) (map[uint64]bool, error) {
	set := map[uint64]bool{}
	var visit func(block uint64, n *node, depth int) error
	visit = func(block uint64, n *node, depth int) error {
		if depth > maxDepth || set[block] {
			return fmt.Errorf("%w: btree loop or too deep at block %d", ErrCorrupt, block)
		}
		set[block] = true
		var err error
		if n == nil {
			if n, err = readNode(r, block, make([]byte, BlockSize)); err != nil {
				return err
			}
		}
		if n.leaf || len(n.vals) == 0 {
			return nil
		}
		first, err := readNode(r, n.vals[0], make([]byte, BlockSize))
		if err != nil {
			return err
		}
		if first.leaf {
			for _, c := range n.vals {
				set[c] = true
			}
			return nil
		}
		for i, c := range n.vals {
			var cn *node
			if i == 0 {
				cn = first
			}
			if err := visit(c, cn, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return set, visit(root, nil, 0)
}

// countSame counts the (key, value) entries, keys ascending, that the
// btree under root maps to the same data block. It descends only into
// the children whose key range holds one of the keys, as the kernel's
// lookup does (child i holds keys from keys[i] up to keys[i+1]).
func countSame(r io.ReaderAt, root uint64, keys, vals []uint64) (uint64, error) {
	return countSameAt(r, root, keys, vals, 0)
}

func countSameAt(r io.ReaderAt, block uint64, keys, vals []uint64, depth int) (uint64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	if depth > maxDepth {
		return 0, fmt.Errorf("%w: btree too deep at block %d", ErrCorrupt, block)
	}
	n, err := readNode(r, block, make([]byte, BlockSize))
	if err != nil {
		return 0, err
	}
	if n.leaf {
		var same uint64
		for i, k := range keys {
			j := sort.Search(len(n.keys), func(j int) bool { return n.keys[j] >= k })
			if j < len(n.keys) && n.keys[j] == k && n.vals[j]>>24 == vals[i]>>24 {
				same++
			}
		}
		return same, nil
	}
	var same uint64
	start := 0
	for i := range n.keys {
		end := len(keys)
		if i+1 < len(n.keys) {
			next := n.keys[i+1]
			end = start + sort.Search(len(keys)-start, func(j int) bool { return keys[start+j] >= next })
		}
		if start < end {
			c, err := countSameAt(r, n.vals[i], keys[start:end], vals[start:end], depth+1)
			if err != nil {
				return 0, err
			}
			same += c
		}
		start = end
	}
	return same, nil
}
