package extract

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
)

var errNetwork = errors.New("connection reset by peer")

// failAfter returns n bytes of r, then errNetwork.
type failAfter struct {
	r io.Reader
	n int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errNetwork
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	k, err := f.r.Read(p)
	f.n -= k
	if err == io.EOF {
		return k, errNetwork
	}
	return k, err
}

// The decoder runs ahead on its own goroutine; a failing source must
// still be reported as the source's failure, never as a corrupt or
// truncated archive, wherever it fails: in the middle, or after the last
// compressed byte (met only while draining).
func TestSourceErrorThroughReadahead(t *testing.T) {
	big := strings.Repeat("incompressible? no, but long enough. ", 200000)
	data := gz(t, mkTar(t, dir("etc"), file("etc/a", big), file("etc/b", big)))
	for _, cut := range []int{len(data) / 3, len(data) - 100, len(data)} {
		for _, validate := range []bool{false, true} {
			src := &failAfter{r: bytes.NewReader(data), n: cut}
			var err error
			if validate {
				_, err = Validate(context.Background(), src, Options{})
			} else {
				_, err = Extract(context.Background(), src, newSandbox(t).root, Options{})
			}
			if !errors.Is(err, errNetwork) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) {
				t.Errorf("cut at %d of %d (validate %v): err = %v, want the source's error", cut, len(data), validate, err)
			}
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Review of issue 11, item 5: once the extraction has failed, the
// readahead stops reading the source at its next read, even when the
// decoder is inside one Read that consumes input without producing any
// (here 64 MiB of empty gzip members, which klauspost's gzip reader
// loops over in a single call). It used to read on to the end of the
// source before Close returned: CPU and network spent on an archive
// already refused.
func TestReadaheadStopsReadingAfterFailure(t *testing.T) {
	// The first member: a refused first entry, and enough data after it
	// that the first chunk handed over is full.
	first := gz(t, mkTar(t, file("../escape", strings.Repeat("x", 2*raChunkSize))))
	empty := gz(t, nil)
	trailer := bytes.Repeat(empty, (64<<20)/len(empty))
	data := append(append([]byte{}, first...), trailer...)
	for _, validate := range []bool{true, false} {
		src := &countingReader{r: bytes.NewReader(data)}
		var err error
		if validate {
			_, err = Validate(context.Background(), src, Options{})
		} else {
			_, err = Extract(context.Background(), src, newSandbox(t).root, Options{})
		}
		if !errors.Is(err, ErrPathTraversal) {
			t.Fatalf("validate %v: err = %v, want the first entry refused", validate, err)
		}
		// What bufio and the decoder hold, and what the goroutine read
		// before it was told: a few MiB, never the 64 MiB to the end.
		after := src.n.Load() - int64(len(first))
		t.Logf("validate %v: %d bytes read after the refused entry's member", validate, after)
		if after > 16<<20 {
			t.Errorf("validate %v: read %d bytes of the %d after the refused entry's member", validate, after, len(trailer))
		}
	}
}

// emptyReads returns (0, nil) k times before every read of r: allowed by
// io.Reader, if discouraged.
type emptyReads struct {
	r    io.Reader
	k, i int
}

func (e *emptyReads) Read(p []byte) (int, error) {
	if e.i < e.k {
		e.i++
		return 0, nil
	}
	e.i = 0
	return e.r.Read(p)
}

// The source is read on a goroutine of its own (sourceFeed): a source
// that sometimes returns nothing still extracts, with both digests over
// exactly its bytes; one that never returns anything is the source's
// failure (io.ErrNoProgress, as bufio says), not a corrupt archive, and
// does not spin forever.
func TestSourceFeedEmptyReads(t *testing.T) {
	big := strings.Repeat("incompressible? no, but long enough. ", 100000)
	data := gz(t, mkTar(t, dir("etc"), file("etc/a", big), file("etc/b", big)))
	want, err := Validate(context.Background(), bytes.NewReader(data), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Extract(context.Background(), &emptyReads{r: bytes.NewReader(data), k: 3}, newSandbox(t).root, Options{})
	if err != nil {
		t.Fatalf("source with empty reads: %v", err)
	}
	if got.Digest != want.Digest || got.DiffID != want.DiffID || got.CompressedBytes != int64(len(data)) {
		t.Errorf("source with empty reads: digest %s diffID %s over %d bytes, want %s %s over %d",
			got.Digest, got.DiffID, got.CompressedBytes, want.Digest, want.DiffID, len(data))
	}

	stuck := io.MultiReader(bytes.NewReader(data[:len(data)/2]), &emptyReads{r: strings.NewReader(""), k: 1 << 30})
	_, err = Extract(context.Background(), stuck, newSandbox(t).root, Options{})
	if !errors.Is(err, io.ErrNoProgress) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) {
		t.Errorf("stuck source: err = %v, want io.ErrNoProgress as the source's error", err)
	}
}

// smallReads returns at most k bytes per Read, as a network body does.
type smallReads struct {
	r io.Reader
	k int
}

func (s *smallReads) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.k)]) }

// A source that returns 16 KiB per read still fills the feed's chunks to
// feedMinFill before handing them over: one chunk per read kept the feed
// only 64 KiB ahead of the decoder, too little to hide a network's jitter.
func TestSourceFeedFillsChunksFromSmallReads(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
	stop := make(chan struct{})
	s := &sourceReader{ctx: context.Background(), r: &smallReads{r: bytes.NewReader(data), k: 16 << 10}, h: newSHA256(), limit: 1 << 40}
	s.feedAsync(stop)
	var got int
	for {
		c := <-s.feed.ch
		got += c.n
		if c.err == nil && c.n < feedMinFill {
			t.Fatalf("chunk of %d bytes handed over before the source's end (want at least %d)", c.n, feedMinFill)
		}
		s.feed.free <- feedChunk{buf: c.buf, n: c.n}
		if c.err != nil {
			if c.err != io.EOF {
				t.Fatal(c.err)
			}
			break
		}
	}
	close(stop)
	s.waitFeed()
	if got != len(data) {
		t.Fatalf("feed handed over %d bytes, want %d", got, len(data))
	}
}
