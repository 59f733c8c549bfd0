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

	ra *readahead // nil: Read decodes on the caller's goroutine
}

func (d *decodeReader) Read(p []byte) (int, error) {
	if d.ra != nil {
		return d.ra.read(d, p)
	}
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.err == nil {
		d.err = err
	}
	return n, err
}

// Close stops the readahead, if any, waiting for it, and releases the
// decoder. After it the source's counters and hash are the caller's again.
func (d *decodeReader) Close() {
	if d.ra != nil {
		d.ra.stopAndWait()
		d.ra.src.waitFeed()
		d.ra.src.n, d.ra.src.err, d.ra.src.detach, d.ra.src.stop = d.ra.src.rn, d.ra.src.rerr, false, nil
		d.ra = nil
	}
	if d.close != nil {
		d.close()
		d.close = nil
	}
}

// drainSource reads what is left of the raw stream after the decoder's end
// (trailing padding or garbage), so the digest covers it.
func (d *decodeReader) drainSource(br *bufio.Reader) error {
	if d.ra != nil {
		return d.ra.drained(d)
	}
	_, err := io.Copy(io.Discard, br)
	return err
}

// Readahead geometry: the decoder runs at most raChunks × raChunkSize
// bytes ahead of the tar reader, which bounds the memory a decompression
// bomb can make us hold to that, whatever its ratio. Chunks of 1 MiB
// rather than 256 KiB wake the two goroutines a quarter as often, which
// measured 2 % faster on the rootfs bench (docs/benchmarks.md).
const (
	raChunks    = 4
	raChunkSize = 1 << 20
)

// readahead runs the decompression in a goroutine of its own (and the
// source reads and the raw stream's digest in another, sourceFeed), so
// that inflating overlaps with hashing the tar stream and writing files,
// which stay on the extraction's goroutine with every check. The bytes it hands over are exactly those
// the decoder returned, in order; each chunk carries the decoder's error
// that followed it and a snapshot of the source's byte count and error
// taken when it was filled, which the reading side publishes (into
// decodeReader.err and sourceReader.n/err) only as it consumes that chunk:
// errors are attributed where a sequential read would have met them, never
// by how far the goroutine happened to get.
type readahead struct {
	src  *sourceReader
	ch   chan raChunk
	free chan []byte
	stop chan struct{}
	done chan struct{}

	cur     raChunk
	off     int
	last    bool  // cur carried the decoder's final error
	lastErr error // which is returned from then on
	drain   *raChunk
}

type raChunk struct {
	buf    []byte
	n      int
	err    error // decoder error after buf[:n]; io.EOF at its end
	srcN   int64
	srcErr error
	// Set on the chunk ending with io.EOF of a compressed stream: the
	// outcome of reading the raw stream to its end after the decoder's.
	drainErr  error
	drainN    int64
	drainSErr error
}

// startReadahead moves decoding to a goroutine. src must be the reader
// under br and br the one under the decoder; from here until Close only
// that goroutine reads them.
func (d *decodeReader) startReadahead(src *sourceReader, br *bufio.Reader) {
	ra := &readahead{
		src:  src,
		ch:   make(chan raChunk, raChunks),
		free: make(chan []byte, raChunks),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range raChunks {
		ra.free <- make([]byte, raChunkSize)
	}
	src.detach, src.stop = true, ra.stop
	src.feedAsync(ra.stop)
	d.ra = ra
	go ra.produce(d.r, br, d.compressed)
}

func (ra *readahead) produce(r io.Reader, br *bufio.Reader, compressed bool) {
	defer close(ra.done)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		c := raChunk{buf: buf}
		for c.n < len(buf) && c.err == nil {
			var k int
			k, c.err = r.Read(buf[c.n:])
			c.n += k
		}
		c.srcN, c.srcErr = ra.src.rn, ra.src.rerr
		if c.err == io.EOF && compressed {
			c.drainErr = ra.drainRaw(br)
			c.drainN, c.drainSErr = ra.src.rn, ra.src.rerr
		}
		select {
		case ra.ch <- c:
		case <-ra.stop:
			return
		}
		if c.err != nil {
			return
		}
	}
}

// drainRaw is io.Copy(io.Discard, br) that gives up when told to stop.
func (ra *readahead) drainRaw(br *bufio.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-ra.stop:
			return errReadaheadStopped
		default:
		}
		_, err := br.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var errReadaheadStopped = errors.New("readahead stopped")

func (ra *readahead) read(d *decodeReader, p []byte) (int, error) {
	for ra.off == ra.cur.n {
		if ra.last {
			return 0, ra.lastErr
		}
		if ra.cur.buf != nil {
			ra.free <- ra.cur.buf
			ra.cur.buf = nil
		}
		c := <-ra.ch
		ra.cur, ra.off = c, 0
		ra.src.n, ra.src.err = c.srcN, c.srcErr
		if c.err != nil {
			ra.last, ra.lastErr = true, c.err
			if c.err != io.EOF && d.err == nil {
				d.err = c.err
			}
			if c.err == io.EOF && d.compressed {
				ra.drain = &c
			}
		}
	}
	n := copy(p, ra.cur.buf[ra.off:ra.cur.n])
	ra.off += n
	return n, nil
}

// drained returns the outcome of the raw drain the goroutine did after the
// decoder's end, publishing the source's state after it. It is only called
// once the decoded stream has been read to io.EOF.
func (ra *readahead) drained(d *decodeReader) error {
	if ra.drain == nil {
		// Not at the decoder's end: nothing was drained (cannot happen
		// after a clean io.EOF of a compressed stream).
		return nil
	}
	c := ra.drain
	ra.src.n, ra.src.err = c.drainN, c.drainSErr
	return c.drainErr
}

func (ra *readahead) stopAndWait() {
	close(ra.stop)
	<-ra.done
}

// classifyDecodeErr maps a decoder error to ErrTruncated or ErrCorrupt,
// keeping the decoder's text.
func classifyDecodeErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: compressed stream: %v", ErrTruncated, err)
	}
	return fmt.Errorf("%w: compressed stream: %v", ErrCorrupt, err)
}
