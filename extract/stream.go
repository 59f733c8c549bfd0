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

	async *asyncHash // set while a readahead runs: see hashAsync
}

// asyncHash hashes the raw stream on a goroutine of its own while a
// readahead runs. On two cores the readahead's goroutine (reads, inflate)
// is the extraction's bottleneck, with the writing goroutine idle about
// half the time: this takes the raw-stream digest off the former at the
// cost of copying the compressed bytes (a tenth of the digest's cost).
// The bytes are hashed in the order read; two buffers bound the memory.
type asyncHash struct {
	ch   chan []byte // filled buffers, in stream order
	free chan []byte
	done chan struct{}
}

const (
	hashBufs    = 2
	hashBufSize = 256 << 10
)

// hashAsync starts the hashing goroutine; from here until waitHash, s.h
// is that goroutine's.
func (s *sourceReader) hashAsync() {
	a := &asyncHash{ch: make(chan []byte, hashBufs), free: make(chan []byte, hashBufs), done: make(chan struct{})}
	for range hashBufs {
		a.free <- make([]byte, 0, hashBufSize)
	}
	s.async = a
	h := s.h
	go func() {
		defer close(a.done)
		for b := range a.ch {
			h.Write(b)
			a.free <- b[:0] // never blocks: there are hashBufs buffers
		}
	}()
}

func (s *sourceReader) hash(p []byte) {
	if s.async == nil {
		s.h.Write(p)
		return
	}
	for len(p) > 0 {
		b := <-s.async.free
		k := min(len(p), cap(b))
		s.async.ch <- append(b, p[:k]...)
		p = p[k:]
	}
}

// waitHash waits until every byte read so far is in s.h, which is the
// caller's again.
func (s *sourceReader) waitHash() {
	if s.async == nil {
		return
	}
	close(s.async.ch)
	<-s.async.done
	s.async = nil
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
	n, err := s.r.Read(p)
	s.hash(p[:n])
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
