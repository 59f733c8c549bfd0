package blockimage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/blockimage"
)

// FetchChunk returns a chunk's bytes, and names a corrupt or missing one
// as Fill does.
func TestFetchChunk(t *testing.T) {
	st := newMemStore()
	img := newImage(16*MiB, 61, E{0, 6 * MiB})
	m, _ := publish(t, st, img, blockimage.PublishOptions{})
	ctx := context.Background()
	for i, c := range m.Chunks {
		out := make([]byte, c.Length)
		if _, err := blockimage.FetchChunk(ctx, st, prefix, i, c, out); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, out, img.dev.data[c.Offset:c.End()])
	}
	c := m.Chunks[1]
	if _, err := blockimage.FetchChunk(ctx, st, prefix, 1, c, make([]byte, c.Length-1)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("short buffer: %v", err)
	}
	key0 := blockimage.ChunkKey(prefix, m.Chunks[0].Digest)
	st.mu.Lock()
	other := st.objs[key0]
	st.mu.Unlock()
	st.set(blockimage.ChunkKey(prefix, c.Digest), other)
	var ce *blockimage.ChunkError
	if _, err := blockimage.FetchChunk(ctx, st, prefix, 1, c, make([]byte, c.Length)); !errors.As(err, &ce) || ce.Index != 1 || !errors.Is(err, blockimage.ErrChunkCorrupt) {
		t.Errorf("corrupt: %v", err)
	}
	st.del(key0)
	if _, err := blockimage.FetchChunk(ctx, st, prefix, 0, m.Chunks[0], make([]byte, m.Chunks[0].Length)); !errors.Is(err, blockimage.ErrChunkMissing) {
		t.Errorf("missing: %v", err)
	}
}
