package extract

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"
)

// progressEvery is how many uncompressed bytes pass between Progress calls.
const progressEvery = 4 << 20

// sourceReader counts and hashes the bytes read from the caller's reader
// (the compressed blob) and remembers the source's own errors, so that a
// failing network read is not reported as a corrupt archive.
//
// n and err are what the extraction has seen. Once a readahead runs the
// reads in a goroutine of its own (see readahead), Read only updates rn
// and rerr, and n and err are the snapshot that travelled with the
// decoded bytes the extraction has consumed so far; h belongs to the
// readahead until it has stopped.
type sourceReader struct {
	ctx   context.Context
	r     io.Reader
	h     hash.Hash
	n     int64
	limit int64
	err   error

	rn     int64 // bytes read, by whichever goroutine reads
	rerr   error
	detach bool // set before a readahead starts: Read leaves n and err alone
	// stop, set while a readahead runs, is closed when the extraction
	// is done with it (finished or failed): Read then refuses, so the
	// goroutine stops at its next read of the source even inside a
	// decoder call that reads on without returning (a run of empty gzip
	// members is one Read to klauspost's gzip reader), rather than
	// reading the source to its end for an archive already refused.
	stop <-chan struct{}

	feed *sourceFeed // set while a readahead runs: see feedAsync
}

// sourceFeed reads and hashes the raw stream on a goroutine of its own
// while a readahead runs, up to feedBufs × feedBufSize bytes ahead of the
// decoder, which takes the bytes from it in order. On two cores the
// inflating goroutine is the extraction's bottleneck: this takes the
// raw-stream digest and the source's read calls (syscalls, or network
// reads, which then overlap with inflating) off it. The decoder sees the
// same bytes, and each error of the source after the same bytes, as if
// it read the source itself: sourceReader.Read counts and judges them
// as they are taken, not as they are read.
//
// The raw-stream digest covers exactly the bytes taken, as when it was
// computed in Read, so that a failed extraction's Result.Digest is that of
// its CompressedBytes: a chunk is hashed when it comes back consumed (on
// the feed's goroutine, before it is read into again), and waitFeed
// hashes what was taken of the rest.
type sourceFeed struct {
	ch   chan feedChunk // read chunks, in stream order
	free chan feedChunk // consumed chunks (buf[:n] taken, not yet hashed), in stream order
	done chan struct{}

	cur feedChunk
	off int
	end bool // cur carried the source's last result
}

type feedChunk struct {
	buf []byte
	n   int
	err error // the source's error after buf[:n] (io.EOF at its end)
}

const (
	feedBufs    = 4
	feedBufSize = 512 << 10
	// feedMinFill is how much a chunk holds before it is handed over,
	// unless the source ends or fails first.
	feedMinFill = 128 << 10
	// maxEmptyReads is how many (0, nil) reads in a row the source may
	// return before it is taken to be stuck (bufio's limit).
	maxEmptyReads = 100
)

// feedAsync starts the reading goroutine, which stops at stop; from here
// until waitFeed, s.r and s.h are that goroutine's.
func (s *sourceReader) feedAsync(stop <-chan struct{}) {
	f := &sourceFeed{ch: make(chan feedChunk, feedBufs), free: make(chan feedChunk, feedBufs), done: make(chan struct{})}
	for range feedBufs {
		f.free <- feedChunk{buf: make([]byte, feedBufSize)}
	}
	s.feed = f
	go f.fill(s.ctx, s.r, s.h, s.limit, stop)
}

func (f *sourceFeed) fill(ctx context.Context, r io.Reader, h hash.Hash, limit int64, stop <-chan struct{}) {
	defer close(f.done)
	var total int64
	for {
		// Stop first: once told, start no read (select picks at random
		// among ready cases, and free and ch may well be ready too).
		select {
		case <-stop:
			return
		default:
		}
		var buf []byte
		select {
		case used := <-f.free:
			h.Write(used.buf[:used.n])
			buf = used.buf
		case <-stop:
			return
		}
		c := feedChunk{buf: buf}
		// A chunk is handed over once it holds feedMinFill bytes (or the
		// source's last): a network body returns some 16 KiB per read,
		// and a chunk per read would keep the feed only 4 reads ahead.
		for empty := 0; c.n < feedMinFill && c.err == nil; {
			if c.err = ctx.Err(); c.err != nil {
				break
			}
			select {
			case <-stop:
				return
			default:
			}
			if empty == maxEmptyReads {
				c.err = io.ErrNoProgress // as bufio gives up
				break
			}
			var k int
			k, c.err = r.Read(buf[c.n:])
			c.n += k
			if k == 0 {
				empty++
			} else {
				empty = 0
			}
		}
		total += int64(c.n)
		select {
		case f.ch <- c:
		case <-stop:
			return
		}
		// Past the limit the reader refuses (sourceReader.Read): no
		// need to read on.
		if c.err != nil || total > limit {
			return
		}
	}
}

// read copies the next bytes of the stream into p; stopped when the
// extraction is done with the readahead.
func (f *sourceFeed) read(p []byte, stop <-chan struct{}) (int, error) {
	for f.off == f.cur.n {
		if f.end {
			return 0, f.cur.err
		}
		if f.cur.buf != nil {
			f.free <- feedChunk{buf: f.cur.buf, n: f.cur.n} // never blocks: there are feedBufs buffers
			f.cur.buf = nil
		}
		select {
		case c := <-f.ch:
			f.cur, f.off = c, 0
			f.end = c.err != nil
		case <-stop:
			return 0, errReadaheadStopped
		case <-f.done:
			// The goroutine stopped after its last chunk, and that
			// chunk has been taken: past the limit (reported by
			// Read before we get here) or told to stop.
			select {
			case c := <-f.ch:
				f.cur, f.off = c, 0
				f.end = c.err != nil
			default:
				return 0, errReadaheadStopped
			}
		}
		if f.off == f.cur.n && f.end {
			return 0, f.cur.err
		}
	}
	n := copy(p, f.cur.buf[f.off:f.cur.n])
	f.off += n
	if f.off == f.cur.n && f.end {
		return n, f.cur.err
	}
	return n, nil
}

// waitFeed waits for the reading goroutine to stop (stop must be closed,
// and the reading side done with the feed); s.r and s.h are the caller's
// again, s.h holding every byte taken from the feed, and no other.
func (s *sourceReader) waitFeed() {
	f := s.feed
	if f == nil {
		return
	}
	<-f.done
	for {
		select {
		case used := <-f.free:
			s.h.Write(used.buf[:used.n])
			continue
		default:
		}
		break
	}
	if f.cur.buf != nil {
		s.h.Write(f.cur.buf[:f.off])
	}
	s.feed = nil
}

func (s *sourceReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.stop != nil {
		select {
		case <-s.stop:
			return 0, errReadaheadStopped
		default:
		}
	}
	var n int
	var err error
	if s.feed != nil {
		n, err = s.feed.read(p, s.stop)
	} else {
		n, err = s.r.Read(p)
		s.h.Write(p[:n])
	}
	s.rn += int64(n)
	if err != nil && err != io.EOF && s.rerr == nil {
		s.rerr = err
	}
	if s.rn > s.limit && err == nil {
		// A compressed stream larger than the uncompressed limit is
		// garbage after the end or a bomb of its own.
		err = &limitError{msg: "more than " + ExactSize(s.limit) + " of input"}
		s.rerr = err
	}
	if !s.detach {
		s.n, s.err = s.rn, s.rerr
	}
	return n, err
}

// tarStream counts and hashes the uncompressed tar stream, enforces
// MaxTotalSize on it, and keeps the last block read so the end-of-archive
// marker can be checked.
type tarStream struct {
	ctx      context.Context
	r        io.Reader
	h        hash.Hash
	n        int64
	limit    int64
	tail     [1024]byte // last 1024 bytes read (ring, see tailBytes)
	progress func(int64)
	lastProg int64
	err      error
}

func (t *tarStream) Read(p []byte) (int, error) {
	if err := t.ctx.Err(); err != nil {
		return 0, err
	}
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.r.Read(p)
	t.h.Write(p[:n])
	t.n += int64(n)
	t.keepTail(p[:n])
	if t.n > t.limit {
		t.err = &limitError{msg: "uncompressed stream exceeds " + ExactSize(t.limit)}
		return n, t.err
	}
	if t.progress != nil && t.n-t.lastProg >= progressEvery {
		t.lastProg = t.n
		t.progress(t.n)
	}
	return n, err
}

func (t *tarStream) keepTail(b []byte) {
	if len(b) >= len(t.tail) {
		copy(t.tail[:], b[len(b)-len(t.tail):])
		return
	}
	copy(t.tail[:], t.tail[len(b):])
	copy(t.tail[len(t.tail)-len(b):], b)
}

// endMarkerSeen reports whether the last 1024 bytes consumed were zero:
// the two zero blocks that end a tar archive. Go's tar reader returns
// io.EOF both for a proper end and for a stream cut exactly at a header
// boundary; only this check tells them apart. (A stream cut right after
// an entry whose data ends in 1 KiB of zeros still passes; the digest
// check is what catches that.)
func (t *tarStream) endMarkerSeen() bool {
	if t.n < int64(len(t.tail)) {
		return false
	}
	for _, b := range t.tail {
		if b != 0 {
			return false
		}
	}
	return true
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func newSHA256() hash.Hash { return sha256.New() }

// normalizeDigest accepts "sha256:<hex>" or bare hex and returns the
// canonical "sha256:<lowercase hex>"; an empty string stays empty.
func normalizeDigest(d string) (string, error) {
	if d == "" {
		return "", nil
	}
	d = strings.ToLower(strings.TrimSpace(d))
	hexPart := strings.TrimPrefix(d, "sha256:")
	if strings.Contains(hexPart, ":") {
		return "", fmt.Errorf("unsupported digest algorithm in %q (only sha256)", d)
	}
	if len(hexPart) != 64 {
		return "", fmt.Errorf("invalid sha256 digest %q", d)
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return "", fmt.Errorf("invalid sha256 digest %q: %v", d, err)
	}
	return "sha256:" + hexPart, nil
}

// limitError is a size limit hit while reading; it is ErrArchiveTooLarge.
type limitError struct{ msg string }

func (e *limitError) Error() string        { return ErrArchiveTooLarge.Error() + ": " + e.msg }
func (e *limitError) Is(target error) bool { return target == ErrArchiveTooLarge }
