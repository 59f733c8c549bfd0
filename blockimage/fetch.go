package blockimage

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
)

// decoders keeps a few idle decoders for FetchChunk, so that a reader
// fetching chunk after chunk does not build one each time. A decoder
// that does not fit is closed, not dropped: the free list stays bounded
// whatever the callers' concurrency.
var decoders = make(chan *zstd.Decoder, 16)

func getDecoder() (*zstd.Decoder, error) {
	select {
	case d := <-decoders:
		return d, nil
	default:
		return newDecoder()
	}
}

func putDecoder(d *zstd.Decoder) {
	select {
	case decoders <- d:
	default:
		d.Close()
	}
}

// FetchChunk fetches, decompresses and verifies chunk c, the i-th of its
// manifest (i only names it in errors), into out, which must be exactly
// c.Length bytes, and returns the size of the object fetched. It is
// Fill's fetch for one chunk, for readers that fetch chunks as they are
// asked for: the same bounds (the object is read only up to the most an
// encoding of c.Length bytes can take) and the same *ChunkError
// (ErrChunkMissing, ErrChunkCorrupt, or a store failure). c must come
// from a manifest that passed Validate.
func FetchChunk(ctx context.Context, st Store, prefix string, i int, c Chunk, out []byte) (int64, error) {
	if c.Length <= 0 || c.Length > MaxChunkSize || int64(len(out)) != c.Length {
		return 0, fmt.Errorf("FetchChunk: chunk %d of %d bytes into a %d-byte buffer: %w", i, c.Length, len(out), errdefs.ErrInvalidArgument)
	}
	dec, err := getDecoder()
	if err != nil {
		return 0, err
	}
	defer putDecoder(dec)
	return fetchChunk(ctx, st, prefix, i, c, dec, make([]byte, maxCompressedSize(c.Length)), out)
}
