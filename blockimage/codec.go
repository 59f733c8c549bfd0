package blockimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// newEncoder returns an encoder for up to par chunks at once. Each chunk
// is one independent zstd frame, as in zstd's seekable format, so any
// chunk decodes alone.
func newEncoder(par int) (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(par))
}

// newDecoder returns a streaming decoder for one fill worker. The window
// is capped at MaxChunkSize: a chunk needs no more history than its own
// length, and a frame that asks for more is refused instead of being
// allocated.
func newDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(MaxChunkSize),
		zstd.WithDecoderMaxMemory(MaxChunkSize))
}

// errLength is why a chunk decompressed to the wrong length.
var errLength = errors.New("wrong decompressed length")

// decodeChunk decompresses comp into exactly dst. Streaming into a buffer
// the chunk's declared size, then asking for one more byte, is what
// refuses a chunk that decompresses to more without ever holding the
// excess: the decoder produces at most one more block of it.
func decodeChunk(dec *zstd.Decoder, comp, dst []byte) error {
	if err := dec.Reset(bytes.NewReader(comp)); err != nil {
		return err
	}
	if n, err := io.ReadFull(dec, dst); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: %d bytes, want %d", errLength, n, len(dst))
		}
		return err
	}
	var one [1]byte
	switch _, err := io.ReadFull(dec, one[:]); {
	case err == nil:
		return fmt.Errorf("%w: more than %d bytes", errLength, len(dst))
	case err != io.EOF:
		return err
	}
	return nil
}
