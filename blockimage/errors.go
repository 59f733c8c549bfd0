package blockimage

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
)

// Kinds of failure, matched with errors.Is. Each wraps the errdefs kind
// containerd callers already switch on.
var (
	// ErrInvalidManifest: a manifest that breaks the format. It is data
	// loss, not a bad argument: manifests are read from a bucket.
	ErrInvalidManifest = fmt.Errorf("invalid block image manifest: %w", errdefs.ErrDataLoss)
	// ErrChunkMissing: a chunk the manifest names is not in the store.
	ErrChunkMissing = fmt.Errorf("block image chunk missing: %w", errdefs.ErrNotFound)
	// ErrChunkCorrupt: a chunk object that does not decompress to
	// exactly its length, or whose bytes do not have its digest.
	ErrChunkCorrupt = fmt.Errorf("block image chunk corrupt: %w", errdefs.ErrDataLoss)
	// ErrInvalidExtents: Publish was given extents or metadata that
	// cannot describe the device.
	ErrInvalidExtents = fmt.Errorf("invalid block image extents: %w", errdefs.ErrInvalidArgument)
)

// ManifestError names the field of a manifest that is wrong.
type ManifestError struct {
	Field  string // "device_size", "chunks[3].offset", ...
	Reason string
}

func (e *ManifestError) Error() string {
	return fmt.Sprintf("invalid block image manifest: %s: %s", e.Field, e.Reason)
}

// Unwrap lets errors.Is match ErrInvalidManifest and errdefs.ErrDataLoss.
func (e *ManifestError) Unwrap() error { return ErrInvalidManifest }

func badField(field, format string, args ...any) error {
	return &ManifestError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ChunkError is the failure of one chunk of a fill, naming it so an
// operator can find the object: its index in the manifest, where it goes,
// its digest and its key. errors.Is matches Kind (ErrChunkMissing,
// ErrChunkCorrupt, or nil for a store or write failure) and Err.
type ChunkError struct {
	Index  int
	Offset int64
	Length int64
	Digest string
	Key    string
	Kind   error
	Err    error
}

func (e *ChunkError) Error() string {
	what := "failed"
	if e.Kind != nil {
		what = e.Kind.Error()
	}
	msg := fmt.Sprintf("chunk %d (offset %d, length %d, %s, key %q): %s", e.Index, e.Offset, e.Length, e.Digest, e.Key, what)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ChunkError) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, errdefs.ErrNotFound) }

// wrapKey says which object an error is about, keeping its kind.
func wrapKey(key string, err error) error { return fmt.Errorf("%q: %w", key, err) }
