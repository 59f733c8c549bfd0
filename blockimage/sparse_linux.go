package blockimage

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FileExtents lists the data ranges of a sparse file with SEEK_DATA and
// SEEK_HOLE, rounded out to whole sectors: the extents to Publish a raw
// image file with, and how tests check that a Fill left holes alone. A
// filesystem without hole support reports the whole file as data.
func FileExtents(f *os.File) ([]Extent, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	fd := int(f.Fd())
	var out []Extent
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole after off
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA at %d of %s: %w", off, f.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d of %s: %w", data, f.Name(), err)
		}
		start := data / SectorSize * SectorSize
		end := min((hole+SectorSize-1)/SectorSize*SectorSize, (size+SectorSize-1)/SectorSize*SectorSize)
		if n := len(out); n > 0 && out[n-1].End() >= start {
			out[n-1].Length = end - out[n-1].Offset
		} else {
			out = append(out, Extent{Offset: start, Length: end - start})
		}
		off = hole
	}
	return out, nil
}
