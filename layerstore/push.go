package layerstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

// Pushed says what PushLayer did with one layer.
type Pushed struct {
	Layer     ocispec.Descriptor
	DiffID    string
	BlobKey   string
	Uploaded  bool // false: the blob was already there with the right size
	PointerOK bool // false: the pointer was written (missing or different)
}

// PushImage uploads every layer of the image whose manifest (or index)
// is target, for the platform platform matches, from cs: the blob to
// blobs/sha256/<digest> and the diff-id pointer. report, if not nil, is
// called after each layer.
func (s *Store) PushImage(ctx context.Context, cs content.Store, target ocispec.Descriptor, platform platforms.MatchComparer, report func(Pushed)) error {
	manifest, err := images.Manifest(ctx, cs, target, platform)
	if err != nil {
		return fmt.Errorf("reading the manifest of %s: %w", target.Digest, err)
	}
	diffIDs, err := images.RootFS(ctx, cs, manifest.Config)
	if err != nil {
		return fmt.Errorf("reading the config %s: %w", manifest.Config.Digest, err)
	}
	if len(diffIDs) != len(manifest.Layers) {
		return fmt.Errorf("config %s has %d diff ids for %d layers", manifest.Config.Digest, len(diffIDs), len(manifest.Layers))
	}
	for i, layer := range manifest.Layers {
		if !images.IsLayerType(layer.MediaType) {
			return fmt.Errorf("layer %s: media type %q is not a layer", layer.Digest, layer.MediaType)
		}
		p, err := s.PushLayer(ctx, cs, layer, diffIDs[i].String())
		if err != nil {
			return err
		}
		if report != nil {
			report(p)
		}
	}
	return nil
}

// PushLayer uploads one layer blob from cs unless the store has it with
// the right size, then makes sure the pointer for diffID names it.
func (s *Store) PushLayer(ctx context.Context, cs content.Provider, layer ocispec.Descriptor, diffID string) (Pushed, error) {
	p := Pushed{Layer: layer, DiffID: diffID}
	key, err := s.BlobKey(layer.Digest.String())
	if err != nil {
		return p, err
	}
	p.BlobKey = key
	ptrKey, err := s.PointerKey(diffID)
	if err != nil {
		return p, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	fail := func(what, key string, err error) (Pushed, error) {
		return p, fmt.Errorf("layer %s: %s %s: %w", layer.Digest, what, key, err)
	}

	have, err := s.blobSize(ctx, key)
	if err != nil {
		return fail("checking", key, err)
	}
	if have != layer.Size {
		ra, err := cs.ReaderAt(ctx, layer)
		if err != nil {
			return fail("reading the blob from containerd's content store for", key, err)
		}
		_, err = s.client.Put(ctx, key, content.NewReader(ra), layer.Size)
		ra.Close()
		if err != nil {
			return fail("uploading", key, err)
		}
		p.Uploaded = true
	}

	want := Pointer{Digest: layer.Digest, MediaType: layer.MediaType, Size: layer.Size}
	got, ok, err := s.Pointer(ctx, diffID)
	if err != nil {
		// A broken pointer is replaced, not a reason to stop.
		ok = false
	}
	if ok && got == want {
		p.PointerOK = true
		return p, nil
	}
	if err := s.PutPointer(ctx, diffID, want); err != nil {
		return fail("writing the pointer", ptrKey, err)
	}
	return p, nil
}

// blobSize is the size of the object at key, or -1 when there is none.
func (s *Store) blobSize(ctx context.Context, key string) (int64, error) {
	info, err := s.client.Stat(ctx, key)
	if err == nil {
		return info.Size, nil
	}
	if errors.Is(err, s3fetch.ErrNoSuchKey) {
		return -1, nil
	}
	return 0, err
}
