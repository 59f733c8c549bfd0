package blockimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// FillOptions tunes Fill and connects it to the caller's journal.
type FillOptions struct {
	Prefix      string // the [s3] block_prefix the image was published under
	Parallelism int    // 0: DefaultParallelism
	// Done, if set, reports chunks a previous fill already wrote; they
	// are neither fetched nor written.
	Done func(i int) bool
	// OnChunk, if set, is called after chunk i has been written to dst,
	// one call at a time. Fill does not sync dst: a journal that must
	// survive a crash syncs dst before it records i. An error stops the
	// fill and is returned.
	OnChunk func(i int) error
}

// FillStats says what a Fill did.
type FillStats struct {
	Written         int   // chunks fetched and written
	Skipped         int   // chunks Done said were written before
	Bytes           int64 // uncompressed bytes written
	CompressedBytes int64 // bytes fetched
}

// Fill writes the block image m to dst: every chunk not Done is fetched,
// decompressed to exactly its length, checked against its digest and
// written at its offset, several at once. Nothing else of dst is
// written, so holes stay holes: dst must read zeros outside the chunks,
// as a fresh thin device or a new sparse file does. A chunk that is
// missing or corrupt fails the fill with a *ChunkError naming it.
func Fill(ctx context.Context, st Store, m *Manifest, dst io.WriterAt, opt FillOptions) (FillStats, error) {
	var stats FillStats
	// m may not have come through ParseManifest; its lengths size the
	// buffers below.
	if err := m.Validate(); err != nil {
		return stats, err
	}
	if opt.Parallelism <= 0 {
		opt.Parallelism = DefaultParallelism
	}
	var todo []int
	var longest int64
	for i, c := range m.Chunks {
		if opt.Done != nil && opt.Done(i) {
			stats.Skipped++
			continue
		}
		todo = append(todo, i)
		longest = max(longest, c.Length)
	}
	type worker struct {
		dec       *zstd.Decoder
		buf, cbuf []byte
	}
	workers := make([]worker, opt.Parallelism)
	defer func() {
		for _, w := range workers {
			if w.dec != nil {
				w.dec.Close()
			}
		}
	}()
	var (
		journal           sync.Mutex
		written           atomic.Int64
		bytes, compressed atomic.Int64
	)
	err := forEach(ctx, len(todo), opt.Parallelism, func(ctx context.Context, wn, t int) error {
		w := &workers[wn]
		if w.dec == nil {
			dec, err := newDecoder()
			if err != nil {
				return err
			}
			w.dec = dec
			w.buf = make([]byte, longest)
			w.cbuf = make([]byte, maxCompressedSize(longest))
		}
		i := todo[t]
		c := m.Chunks[i]
		n, err := fetchChunk(ctx, st, opt.Prefix, i, c, w.dec, w.cbuf, w.buf[:c.Length])
		if err != nil {
			return err
		}
		if _, err := dst.WriteAt(w.buf[:c.Length], c.Offset); err != nil {
			return chunkErr(opt.Prefix, i, c, nil, fmt.Errorf("writing: %w", err))
		}
		written.Add(1)
		bytes.Add(c.Length)
		compressed.Add(n)
		if opt.OnChunk != nil {
			journal.Lock()
			defer journal.Unlock()
			if err := opt.OnChunk(i); err != nil {
				return fmt.Errorf("recording chunk %d: %w", i, err)
			}
		}
		return nil
	})
	stats.Written = int(written.Load())
	stats.Bytes, stats.CompressedBytes = bytes.Load(), compressed.Load()
	return stats, err
}

// fetchChunk reads chunk i into out (exactly c.Length bytes), using cbuf
// for the compressed object, and returns the object's size. The object is
// read only up to the most an encoding of c.Length bytes can take, so a
// hostile object costs no more memory than an honest one.
func fetchChunk(ctx context.Context, st Store, prefix string, i int, c Chunk, dec *zstd.Decoder, cbuf, out []byte) (int64, error) {
	key := ChunkKey(prefix, c.Digest)
	rc, size, err := st.Get(ctx, key)
	if isNotFound(err) {
		return 0, chunkErr(prefix, i, c, ErrChunkMissing, err)
	}
	if err != nil {
		return 0, chunkErr(prefix, i, c, nil, err)
	}
	defer rc.Close()
	limit := maxCompressedSize(c.Length)
	if size <= 0 || size > limit {
		return 0, chunkErr(prefix, i, c, ErrChunkCorrupt, fmt.Errorf("object is %d bytes, outside 1..%d for a chunk of %d bytes", size, limit, c.Length))
	}
	comp := cbuf[:size]
	if _, err := io.ReadFull(rc, comp); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return 0, chunkErr(prefix, i, c, ErrChunkCorrupt, fmt.Errorf("object shorter than its %d bytes", size))
		}
		return 0, chunkErr(prefix, i, c, nil, err)
	}
	if err := decodeChunk(dec, comp, out); err != nil {
		return 0, chunkErr(prefix, i, c, ErrChunkCorrupt, fmt.Errorf("decompressing: %w", err))
	}
	if sum := sha256.Sum256(out); "sha256:"+hex.EncodeToString(sum[:]) != c.Digest {
		return 0, chunkErr(prefix, i, c, ErrChunkCorrupt, fmt.Errorf("content has digest sha256:%x", sum))
	}
	return size, nil
}

func chunkErr(prefix string, i int, c Chunk, kind, err error) error {
	return &ChunkError{Index: i, Offset: c.Offset, Length: c.Length, Digest: c.Digest, Key: ChunkKey(prefix, c.Digest), Kind: kind, Err: err}
}
