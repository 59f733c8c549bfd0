package extract

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// Sparse entries (GNU 'S' headers and PAX GNU.sparse.* records) hold only
// their data fragments; the tar reader returns the holes as zeros. Their
// size, counted against MaxFileSize and MaxTotalSize, is the logical one.
// Written out in full, a 3.5 KB archive could take a GiB of the device, so
// their zero runs are left as holes.

func isSparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// holeBlock is the granularity of holes: a filesystem block.
const holeBlock = 4096

var zeroBlock [holeBlock]byte

// copySparse copies r to the file open at fd, skipping every
// block-aligned run of zeros, and sets the file's size to what was read.
// It returns the number of bytes read, holes included.
func copySparse(fd int, r io.Reader, buf []byte) (int64, error) {
	var off int64
	for {
		n, rerr := fill(r, buf)
		if err := writeNonZero(fd, buf[:n], off); err != nil {
			return off, err
		}
		off += int64(n)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return off, rerr
		}
	}
	return off, unix.Ftruncate(fd, off)
}

// fill reads into buf until it is full or r ends (io.EOF) or fails.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeNonZero writes the blocks of b that are not all zeros at off (a
// multiple of holeBlock), in runs.
func writeNonZero(fd int, b []byte, off int64) error {
	start := -1 // start of the current run of data blocks
	for i := 0; i < len(b); i += holeBlock {
		blk := b[i:min(i+holeBlock, len(b))]
		zero := bytes.Equal(blk, zeroBlock[:len(blk)])
		if !zero && start < 0 {
			start = i
		}
		if zero && start >= 0 {
			if err := pwriteAll(fd, b[start:i], off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
	}
	if start >= 0 {
		return pwriteAll(fd, b[start:], off+int64(start))
	}
	return nil
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}
