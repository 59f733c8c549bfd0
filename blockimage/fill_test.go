package blockimage_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"

	"github.com/superfly/flyio-image-manager/blockimage"
)

func encode(t *testing.T, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// fillErr publishes a small image, lets tamper change the store, fills
// and returns the *ChunkError of chunk 1.
func fillErr(t *testing.T, tamper func(st *memStore, key string, c blockimage.Chunk)) *blockimage.ChunkError {
	t.Helper()
	return fillErrAlloc(t, tamper, nil)
}

// fillErrAlloc is fillErr that also sets *alloc, if not nil, to the bytes
// the Fill allocated.
func fillErrAlloc(t *testing.T, tamper func(st *memStore, key string, c blockimage.Chunk), alloc *uint64) *blockimage.ChunkError {
	t.Helper()
	st := newMemStore()
	img := newImage(16*MiB, 11, E{0, 12 * MiB})
	m, _ := publish(t, st, img, blockimage.PublishOptions{})
	c := m.Chunks[1]
	key := blockimage.ChunkKey(prefix, c.Digest)
	tamper(st, key, c)
	dst := newMemDevice(img.meta.DeviceSize)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := blockimage.Fill(context.Background(), st, m, dst, blockimage.FillOptions{Prefix: prefix})
	runtime.ReadMemStats(&after)
	if alloc != nil {
		*alloc = after.TotalAlloc - before.TotalAlloc
	}
	var ce *blockimage.ChunkError
	if !errors.As(err, &ce) {
		t.Fatalf("Fill = %v, want a *ChunkError", err)
	}
	if ce.Index != 1 || ce.Offset != c.Offset || ce.Digest != c.Digest || ce.Key != key {
		t.Errorf("ChunkError %+v does not name chunk 1 %+v at %s", ce, c, key)
	}
	for _, want := range []string{"chunk 1", c.Digest, key} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	return ce
}

func TestFillMissingChunk(t *testing.T) {
	ce := fillErr(t, func(st *memStore, key string, _ blockimage.Chunk) { st.del(key) })
	if !errors.Is(ce, blockimage.ErrChunkMissing) || !errdefs.IsNotFound(ce) {
		t.Errorf("%v: want ErrChunkMissing (not found)", ce)
	}
}

func TestFillCorruptChunk(t *testing.T) {
	for _, tc := range []struct {
		name string
		obj  func(t *testing.T, c blockimage.Chunk) []byte
		say  string
	}{
		{"other content", func(t *testing.T, c blockimage.Chunk) []byte { return encode(t, randomBytes(c.Length, 99)) }, "digest"},
		{"short", func(t *testing.T, c blockimage.Chunk) []byte { return encode(t, randomBytes(c.Length-512, 99)) }, "want"},
		{"long", func(t *testing.T, c blockimage.Chunk) []byte { return encode(t, randomBytes(c.Length+1, 99)) }, "more than"},
		{"not zstd", func(t *testing.T, c blockimage.Chunk) []byte { return []byte("garbage, not a zstd frame") }, "decompressing"},
		{"empty", func(t *testing.T, c blockimage.Chunk) []byte { return nil }, "0 bytes"},
		{"too big", func(t *testing.T, c blockimage.Chunk) []byte { return make([]byte, 2*c.Length) }, "outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := fillErr(t, func(st *memStore, key string, c blockimage.Chunk) { st.set(key, tc.obj(t, c)) })
			if !errors.Is(ce, blockimage.ErrChunkCorrupt) || !errdefs.IsDataLoss(ce) {
				t.Errorf("%v: want ErrChunkCorrupt (data loss)", ce)
			}
			if !strings.Contains(ce.Error(), tc.say) {
				t.Errorf("%v does not say %q", ce, tc.say)
			}
		})
	}
}

// A few KiB that decompress to 256 MiB must be refused after the
// chunk's length, without the decoder ever holding the rest.
func TestFillDecompressionBomb(t *testing.T) {
	var bomb bytes.Buffer
	zw, err := zstd.NewWriter(&bomb)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, MiB)
	for range 256 {
		zw.Write(zeros)
	}
	zw.Close()
	var grew uint64
	ce := fillErrAlloc(t, func(st *memStore, key string, _ blockimage.Chunk) { st.set(key, bomb.Bytes()) }, &grew)
	if !errors.Is(ce, blockimage.ErrChunkCorrupt) || !strings.Contains(ce.Error(), "more than") {
		t.Errorf("%v: want a chunk longer than its length", ce)
	}
	// Three workers' buffers and decoders take about 40 MiB; 256 MiB
	// decoded would dwarf that.
	if grew > 64*MiB {
		t.Errorf("the fill allocated %d MiB", grew/MiB)
	}
}

// A fill resumed with some chunks done fetches and writes only the rest,
// and tells the journal of each as it lands.
func TestFillResume(t *testing.T) {
	st := newMemStore()
	img := newImage(32*MiB, 21, E{0, 20 * MiB}, E{24 * MiB, 4 * MiB})
	m, _ := publish(t, st, img, blockimage.PublishOptions{})
	if len(m.Chunks) != 6 {
		t.Fatalf("%d chunks", len(m.Chunks))
	}
	dst := newMemDevice(img.meta.DeviceSize)
	done := map[int]bool{}

	// First attempt: chunk 3 is missing, so the fill fails part way.
	key3 := blockimage.ChunkKey(prefix, m.Chunks[3].Digest)
	saved := st.objs[key3]
	st.del(key3)
	onChunk := func(i int) error { done[i] = true; return nil }
	_, err := blockimage.Fill(context.Background(), st, m, dst, blockimage.FillOptions{Prefix: prefix, Parallelism: 1, OnChunk: onChunk})
	if !errors.Is(err, blockimage.ErrChunkMissing) {
		t.Fatalf("first Fill = %v", err)
	}
	if len(done) != 3 || !done[0] || !done[1] || !done[2] {
		t.Fatalf("journal after the failure: %v, want chunks 0-2", done)
	}

	st.set(key3, saved)
	st.reset()
	dst.writes = nil
	stats, err := blockimage.Fill(context.Background(), st, m, dst, blockimage.FillOptions{Prefix: prefix,
		Done: func(i int) bool { return done[i] }, OnChunk: onChunk})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Skipped != 3 || stats.Written != 3 || len(st.gets) != 3 {
		t.Errorf("stats %+v, gets %v: want 3 skipped, 3 fetched", stats, st.gets)
	}
	for _, w := range dst.sortedWrites() {
		if w.Offset < m.Chunks[3].Offset {
			t.Errorf("rewrote %v, which was done", w)
		}
	}
	if len(done) != 6 {
		t.Errorf("journal %v", done)
	}
	sameBytes(t, dst.data, img.dev.data)
}

// A journal that cannot record stops the fill.
func TestFillJournalError(t *testing.T) {
	st := newMemStore()
	img := newImage(16*MiB, 5, E{0, 16 * MiB})
	m, _ := publish(t, st, img, blockimage.PublishOptions{})
	_, err := blockimage.Fill(context.Background(), st, m, newMemDevice(img.meta.DeviceSize), blockimage.FillOptions{
		Prefix: prefix, Parallelism: 1, OnChunk: func(int) error { return errors.New("journal full") }})
	if err == nil || !strings.Contains(err.Error(), "journal full") {
		t.Fatalf("Fill = %v", err)
	}
	if len(st.gets) != 1 {
		t.Errorf("fetched %d chunks after the journal failed", len(st.gets))
	}
}

func TestFillRefusesInvalidManifest(t *testing.T) {
	m := &blockimage.Manifest{Format: blockimage.Format, Version: 2}
	_, err := blockimage.Fill(context.Background(), newMemStore(), m, newMemDevice(1), blockimage.FillOptions{})
	if !errors.Is(err, blockimage.ErrInvalidManifest) {
		t.Fatalf("Fill = %v", err)
	}
}
