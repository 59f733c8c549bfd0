package lazy_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/blockimage"
)

func ext(off, n int64) blockimage.Extent { return blockimage.Extent{Offset: off, Length: n} }

func smallImage(t *testing.T, st *memStore, seed uint64) *testImage {
	return publishImage(t, st, 24*MiB, seed, ext(0, 9*MiB), ext(12*MiB+4096, 64<<10), ext(16*MiB, 5*MiB))
}

// served creates an origin and returns its served reader.
func served(t *testing.T, a *fakeAttach, m interface {
	Create(context.Context, string, *blockimage.Manifest) error
	DevicePath(string) (string, error)
}, name string, img *testImage) io.ReaderAt {
	t.Helper()
	if err := m.Create(context.Background(), name, img.man); err != nil {
		t.Fatal(err)
	}
	p, err := m.DevicePath(name)
	if err != nil {
		t.Fatal(err)
	}
	d := a.servedDev(p)
	if d == nil {
		t.Fatalf("DevicePath %s is not a served device", p)
	}
	return d.r
}

// Reads anywhere, across chunk boundaries and holes and at the end, give
// the source image's bytes.
func TestReadsEqualSource(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 1)
	st.delay = 2 * time.Millisecond
	m := openManager(t, a.config(t.TempDir(), st))
	r := served(t, a, m, "base-1", img)
	size := int64(len(img.data))
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(off, n int64) {
		t.Helper()
		buf := make([]byte, n)
		got, err := r.ReadAt(buf, off)
		want := min(n, size-off)
		if int64(got) != want || (want < n && err != io.EOF) || (want == n && err != nil) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", off, n, got, err)
		}
		sameBytes(t, buf[:got], img.data[off:off+want])
	}
	check(4*MiB-512, 1024)  // across chunks 0 and 1
	check(9*MiB-4096, 8192) // chunk end into a hole
	check(10*MiB, 4096)     // a hole
	check(12*MiB, 128<<10)  // hole, small chunk, hole
	check(size-4096, 8192)  // past the end
	check(0, size)          // everything
	for range 50 {
		off := rng.Int64N(size)
		check(off, 1+rng.Int64N(300<<10))
	}
	if _, err := r.ReadAt(make([]byte, 1), size); err != io.EOF {
		t.Errorf("read at the end: %v", err)
	}
}

// Eight readers of one missing chunk: one fetch, all get its bytes.
func TestSingleFetchUnderConcurrentReads(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 2)
	st.delay = 50 * time.Millisecond
	m := openManager(t, a.config(t.TempDir(), st))
	r := served(t, a, m, "base-2", img)
	c := img.man.Chunks[len(img.man.Chunks)-1] // the prefetch comes to it last
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			off := c.Offset + int64(i)*4096
			if _, err := r.ReadAt(buf, off); err != nil {
				errs[i] = err
				return
			}
			if string(buf) != string(img.data[off:off+4096]) {
				errs[i] = errors.New("wrong bytes")
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("reader %d: %v", i, err)
		}
	}
	if n := st.getsOf(blockimage.ChunkKey(prefix, c.Digest)); n != 1 {
		t.Errorf("chunk fetched %d times, want 1", n)
	}
}

// A store failure fails the read and marks nothing; a later read works.
func TestStoreFailureThenRetry(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 3)
	st.setFail(func(string) error { return errors.New("S3 is down") })
	m := openManager(t, a.config(t.TempDir(), st))
	r := served(t, a, m, "base-3", img)
	buf := make([]byte, 4096)
	if _, err := r.ReadAt(buf, 4*MiB); err == nil || !strings.Contains(err.Error(), "S3 is down") {
		t.Fatalf("read with the store down = %v", err)
	}
	s := statusOf(t, m, "base-3")
	if s.ChunksPresent != 0 || s.ReadErrors == 0 || s.FetchErrors == 0 || !strings.Contains(s.LastError, "S3 is down") {
		t.Errorf("status %+v", s)
	}
	st.setFail(nil)
	if _, err := r.ReadAt(buf, 4*MiB); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, buf, img.data[4*MiB:4*MiB+4096])
}

// A corrupt chunk object fails the read with an error naming the chunk.
func TestCorruptChunk(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 4)
	ch0, ch1 := img.man.Chunks[0], img.man.Chunks[1]
	st.objs[blockimage.ChunkKey(prefix, ch1.Digest)] = st.objs[blockimage.ChunkKey(prefix, ch0.Digest)]
	m := openManager(t, a.config(t.TempDir(), st))
	r := served(t, a, m, "base-4", img)
	_, err := r.ReadAt(make([]byte, 512), ch1.Offset)
	var ce *blockimage.ChunkError
	if !errors.As(err, &ce) || ce.Index != 1 || !errors.Is(err, blockimage.ErrChunkCorrupt) || !strings.Contains(err.Error(), "chunk 1") {
		t.Fatalf("read of the corrupt chunk = %v", err)
	}
	if s := statusOf(t, m, "base-4"); s.ChunksPresent == s.ChunksTotal {
		t.Errorf("the corrupt chunk was marked: %+v", s)
	}
}
