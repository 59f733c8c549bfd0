package blockimage

import (
	"fmt"
)

// Extent is a mapped byte range of the source device: the only ranges a
// block image stores. Everything outside the extents reads as zeros on a
// fresh thin device, so it is left out.
type Extent struct {
	Offset int64
	Length int64
}

// End is the first byte after the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// normalize checks extents against the device and merges adjacent ones,
// so that how the metadata reader happened to split a run (per btree
// leaf, say) does not change where chunks are cut. They must be sorted,
// disjoint, whole sectors and inside the device.
func normalize(extents []Extent, deviceSize int64) ([]Extent, error) {
	var out []Extent
	var end int64
	for i, e := range extents {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("extent %d [%d, +%d): %s: %w", i, e.Offset, e.Length, fmt.Sprintf(format, args...), ErrInvalidExtents)
		}
		switch {
		case e.Offset < 0 || e.Offset%SectorSize != 0 || e.Length <= 0 || e.Length%SectorSize != 0:
			return nil, bad("offset and length must be whole %d-byte sectors, length positive", SectorSize)
		case e.Offset < end:
			return nil, bad("starts before the end (%d) of the extent before it: extents must be sorted and disjoint", end)
		case e.Offset > deviceSize-e.Length:
			return nil, bad("ends beyond the device (%d bytes)", deviceSize)
		}
		if n := len(out); n > 0 && out[n-1].End() == e.Offset {
			out[n-1].Length += e.Length
		} else {
			out = append(out, e)
		}
		end = e.End()
	}
	return out, nil
}

// cut splits extents into chunks on a grid of chunkSize over the whole
// device, not from each extent's start: the same data at the same offset
// of two devices then gives the same chunks however their extents begin,
// which is what lets images built from similar tarballs share chunks. A
// chunk never spans a hole, so an extent's first and last chunk may be
// short.
func cut(extents []Extent, chunkSize int64) []Extent {
	var out []Extent
	for _, e := range extents {
		for off := e.Offset; off < e.End(); {
			next := min((off/chunkSize+1)*chunkSize, e.End())
			out = append(out, Extent{Offset: off, Length: next - off})
			off = next
		}
	}
	return out
}
