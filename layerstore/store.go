package layerstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

// LabelLayerDigest is the label CRI puts on the Prepare of a layer with the
// digest of the layer blob (pkg/snapshotters.TargetLayerDigestLabel).
const LabelLayerDigest = "containerd.io/snapshot/cri.layer-digest"

// maxPointerSize bounds how much of a diffids object Open reads: a pointer
// is ~150 bytes, anything large is not one.
const maxPointerSize = 64 << 10

// Pointer is the JSON object stored under diffids/sha256/<hex>: where the
// blob of the layer with that diff id is.
type Pointer struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type"`
	Size      int64         `json:"size"`
}

// Store is the S3 layer store. It implements snapshotter.RemoteLayers.
type Store struct {
	client *s3fetch.Client
	prefix string
}

// New returns the layer store under cfg.LayerPrefix of client's bucket.
func New(client *s3fetch.Client, cfg s3fetch.Config) *Store {
	return &Store{client: client, prefix: cfg.LayerPrefix}
}

// BlobKey is the key of the blob with digest d, after checking d.
func (s *Store) BlobKey(d string) (string, error) {
	dg, err := checkDigest("layer digest", d)
	if err != nil {
		return "", err
	}
	return s.prefix + "blobs/sha256/" + dg.Encoded(), nil
}

// PointerKey is the key of the pointer for diff id d, after checking d.
func (s *Store) PointerKey(d string) (string, error) {
	dg, err := checkDigest("diff id", d)
	if err != nil {
		return "", err
	}
	return s.prefix + "diffids/sha256/" + dg.Encoded(), nil
}

// Open finds the layer a Prepare of containerd's unpacker is for; see the
// package documentation for the lookup order. ok is false, with no error,
// when the store has no such layer or the labels name none.
func (s *Store) Open(ctx context.Context, labels map[string]string) (io.ReadCloser, string, bool, error) {
	diffID, hasDiffID := labels[snapshots.LabelSnapshotDiffID]
	if !hasDiffID {
		// Without the diff id nothing could verify the blob.
		return nil, "", false, nil
	}
	if _, err := checkDigest("label "+snapshots.LabelSnapshotDiffID, diffID); err != nil {
		return nil, "", false, err
	}
	if d, ok := labels[LabelLayerDigest]; ok {
		if _, err := checkDigest("label "+LabelLayerDigest, d); err != nil {
			return nil, "", false, err
		}
		blob, ok, err := s.openBlob(ctx, d, -1)
		if err != nil || ok {
			return blob, diffID, ok, err
		}
		// Not under this digest; the same layer may have been pushed
		// with another compression, which the pointer finds.
	}
	p, ok, err := s.Pointer(ctx, diffID)
	if err != nil || !ok {
		return nil, "", false, err
	}
	blob, ok, err := s.openBlob(ctx, string(p.Digest), p.Size)
	if err != nil {
		return nil, "", false, fmt.Errorf("layer with diff id %s: %w", diffID, err)
	}
	return blob, diffID, ok, nil
}

// openBlob opens the blob d. size, when not negative, must match the
// object's: a pointer and its blob that disagree mean a broken store.
func (s *Store) openBlob(ctx context.Context, d string, size int64) (io.ReadCloser, bool, error) {
	key, err := s.BlobKey(d)
	if err != nil {
		return nil, false, err
	}
	o, err := s.client.Open(ctx, key)
	if errors.Is(err, s3fetch.ErrNoSuchKey) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if size >= 0 && o.Size != size {
		o.Close()
		return nil, false, fmt.Errorf("blob %s is %d bytes, its pointer says %d: %w", key, o.Size, size, errdefs.ErrDataLoss)
	}
	return o, true, nil
}

// Pointer reads the pointer for diff id d. ok is false when there is none.
func (s *Store) Pointer(ctx context.Context, d string) (Pointer, bool, error) {
	key, err := s.PointerKey(d)
	if err != nil {
		return Pointer{}, false, err
	}
	o, err := s.client.Open(ctx, key)
	if errors.Is(err, s3fetch.ErrNoSuchKey) {
		return Pointer{}, false, nil
	}
	if err != nil {
		return Pointer{}, false, err
	}
	defer o.Close()
	if o.Size > maxPointerSize {
		return Pointer{}, false, fmt.Errorf("pointer %s is %d bytes, more than the %d a pointer can be: %w", key, o.Size, maxPointerSize, errdefs.ErrDataLoss)
	}
	data, err := io.ReadAll(o)
	if err != nil {
		return Pointer{}, false, err
	}
	// Unknown fields are allowed: a newer pusher may add some.
	var p Pointer
	if err := json.Unmarshal(data, &p); err != nil {
		return Pointer{}, false, fmt.Errorf("pointer %s: %v: %w", key, err, errdefs.ErrDataLoss)
	}
	if _, err := checkDigest("digest in pointer "+key, string(p.Digest)); err != nil {
		return Pointer{}, false, err
	}
	if p.Size < 0 {
		return Pointer{}, false, fmt.Errorf("pointer %s: negative size %d: %w", key, p.Size, errdefs.ErrDataLoss)
	}
	return p, true, nil
}

// PutPointer stores p as the pointer for diff id d.
func (s *Store) PutPointer(ctx context.Context, d string, p Pointer) error {
	key, err := s.PointerKey(d)
	if err != nil {
		return err
	}
	if _, err := checkDigest("pointer digest", string(p.Digest)); err != nil {
		return err
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = s.client.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
	return err
}
