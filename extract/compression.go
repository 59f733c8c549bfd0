package extract

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is the encoding of an image tarball, detected from its first
// bytes rather than from a file name or a media type, which can lie.
type Compression string

const (
	Uncompressed Compression = "none"
	Gzip         Compression = "gzip"
	Zstd         Compression = "zstd"
)

// zstdMaxWindow bounds the decoder's window (and so its memory). 128 MiB
// admits `zstd --long=27` streams; default levels use at most 8 MiB.
const zstdMaxWindow = 128 << 20

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// DetectCompression names the encoding of a stream from its first bytes
// (pass 512, or all of a shorter stream). A first block that is a tar
// header with a valid checksum is a plain tar, whatever magic its name
// starts with. Anything else that is not gzip, zstd or a known but
// unsupported format is taken to be a plain tar too, which the tar reader
// then checks; for bzip2 and xz it returns ErrUnsupportedCompression.
func DetectCompression(head []byte) (Compression, error) {
	switch {
	case isTarHeader(head):
		return Uncompressed, nil
	case bytes.HasPrefix(head, magicGzip):
		return Gzip, nil
	case bytes.HasPrefix(head, magicZstd):
		return Zstd, nil
	case isZstdSkippable(head):
		return Zstd, nil
	case bytes.HasPrefix(head, magicBzip2):
		return "", fmt.Errorf("%w: bzip2", ErrUnsupportedCompression)
	case bytes.HasPrefix(head, magicXz):
		return "", fmt.Errorf("%w: xz", ErrUnsupportedCompression)
	}
	return Uncompressed, nil
}

// notTar is the error for an input whose (decompressed) start is no tar
// header: the tar reader's own "unexpected EOF" or "invalid header" would
// read as a damaged archive.
func notTar(c string) error {
	if c == "" || Compression(c) == Uncompressed {
		return fmt.Errorf("%w: the input is neither a tar archive nor a gzip- or zstd-compressed one", ErrNotTar)
	}
	return fmt.Errorf("%w: the %s stream does not hold a tar archive", ErrNotTar, c)
}

// headReader keeps the first tar block (512 bytes) read through it.
type headReader struct {
	r    io.Reader
	head *[]byte
}

func (h *headReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if missing := 512 - len(*h.head); missing > 0 && n > 0 {
		*h.head = append(*h.head, p[:min(n, missing)]...)
	}
	return n, err
}

// looksLikeTarHeader reports whether block is a whole tar header block:
// the ustar magic (POSIX, GNU) or a valid header checksum (v7 tar).
func looksLikeTarHeader(block []byte) bool {
	if len(block) < 512 {
		return false
	}
	if bytes.Equal(block[257:262], []byte("ustar")) {
		return true
	}
	field := strings.TrimRight(strings.TrimSpace(string(block[148:156])), "\x00 ")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil {
		return false
	}
	var sum int64
	for i, b := range block {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int64(b)
	}
	return sum == want
}

// isZstdSkippable matches the magic of a zstd skippable frame
// (0x184D2A50..0x184D2A5F little-endian), which may precede the data.
func isZstdSkippable(h []byte) bool {
	return len(h) >= 4 && h[0]&0xf0 == 0x50 && h[1] == 0x2a && h[2] == 0x4d && h[3] == 0x18
}

// decompressor wraps br in the decoder for c. The returned reader remembers
// the first decoding error so that a failure surfacing through the tar
// reader can be told apart from a malformed tar header.
func decompressor(br *bufio.Reader, c Compression) (*decodeReader, error) {
	d := &decodeReader{}
	switch c {
	case Uncompressed:
		d.r = br
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, classifyDecodeErr(err)
		}
		d.r, d.close = zr, func() { zr.Close() }
	case Zstd:
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(zstdMaxWindow),
			zstd.WithDecoderMaxMemory(zstdMaxWindow),
			zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, classifyDecodeErr(err)
		}
		d.r, d.close = zr, zr.Close
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedCompression, c)
	}
	d.compressed = c != Uncompressed
	return d, nil
}

type decodeReader struct {
	r          io.Reader
	close      func()
	compressed bool
	err        error // first non-EOF error from the decoder
}

func (d *decodeReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.err == nil {
		d.err = err
	}
	return n, err
}

func (d *decodeReader) Close() {
	if d.close != nil {
		d.close()
	}
}

// classifyDecodeErr maps a decoder error to ErrTruncated or ErrCorrupt,
// keeping the decoder's text.
func classifyDecodeErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: compressed stream: %v", ErrTruncated, err)
	}
	return fmt.Errorf("%w: compressed stream: %v", ErrCorrupt, err)
}
