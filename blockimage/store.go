package blockimage

import (
	"bytes"
	"context"
	"errors"
	"io"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

// Store is what a block image needs of a bucket. Keys are whole keys
// (ChunkKey and ManifestKey put the prefix in).
type Store interface {
	// Exists reports whether key exists and, if so, its size. Only
	// "not found" is ok=false without an error.
	Exists(ctx context.Context, key string) (size int64, ok bool, err error)
	// Put stores data under key, replacing any object there.
	Put(ctx context.Context, key string, data []byte) error
	// Get opens key and tells its size. A missing key is an error
	// matching errdefs.ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, int64, error)
}

// S3Store is a Store on an s3fetch.Client. Its downloads share the
// client's download queue, so Fill runs at most
// Config.DownloadQueueSize chunk fetches at once whatever its
// Parallelism: give block fills a client of their own with a queue as
// deep as the fill is wide. A PartSize of at least MaxChunkSize fetches a
// chunk in one GET.
type S3Store struct{ Client *s3fetch.Client }

// NewS3Store returns the Store on c's bucket.
func NewS3Store(c *s3fetch.Client) *S3Store { return &S3Store{Client: c} }

func (s *S3Store) Exists(ctx context.Context, key string) (int64, bool, error) {
	info, err := s.Client.Stat(ctx, key)
	if errors.Is(err, s3fetch.ErrNoSuchKey) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return info.Size, true, nil
}

func (s *S3Store) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.Client.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
	return err
}

func (s *S3Store) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	o, err := s.Client.Open(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	return o, o.Size, nil
}

// LoadManifest reads the manifest of the block image converted from the
// tarball at sourceKey. ok is false, with no error, when there is none. A
// manifest that fails ParseManifest, or that names another source key,
// is an ErrInvalidManifest error.
func LoadManifest(ctx context.Context, st Store, prefix, sourceKey string) (*Manifest, bool, error) {
	key := ManifestKey(prefix, sourceKey)
	rc, size, err := st.Get(ctx, key)
	if isNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	if size > MaxManifestSize {
		return nil, false, wrapKey(key, badField("(manifest)", "%d bytes, more than %d", size, MaxManifestSize))
	}
	m, err := ParseManifest(rc)
	if err != nil {
		return nil, false, wrapKey(key, err)
	}
	if m.Source.Key != sourceKey {
		return nil, false, wrapKey(key, badField("source.key", "%q, but the manifest is stored under the key for %q", trunc(m.Source.Key), trunc(sourceKey)))
	}
	return m, true, nil
}
