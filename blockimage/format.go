package blockimage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// Format identifies a block image manifest, so that a tool handed some
// JSON can tell this format from others before looking at its version.
const Format = "flyio-block-image"

// Version is the manifest format this package writes and the only one it
// reads. Readers refuse any other: a change a v1 reader could misread
// (a new codec, chunks that must be combined) bumps it.
const Version = 1

// Compression is the only chunk codec of version 1.
const Compression = "zstd"

// Limits of version 1. A manifest outside them is refused before any of it
// is used: manifests come from a bucket other hosts write to, and Fill
// sizes its buffers from them.
const (
	// SectorSize: device sizes, chunk offsets and lengths are whole
	// sectors, as every block device is, so that a filler may write
	// with O_DIRECT.
	SectorSize = 512
	// DefaultChunkSize is what Publish cuts with unless told otherwise:
	// large enough that per-object request overhead stays small next to
	// transfer time, small enough that parallel fetches of a few GiB
	// keep many connections busy and a retry repeats little.
	DefaultChunkSize = 4 << 20
	// MaxChunkSize bounds chunk_size, hence the memory one fill worker
	// holds (a chunk plus its compressed object).
	MaxChunkSize = 16 << 20
	// MaxDeviceSize is 16 TiB, far above any base device; a larger
	// device_size is a corrupt or hostile manifest.
	MaxDeviceSize = 16 << 40
	// MaxChunks is 512 GiB of mapped data at the default chunk size.
	MaxChunks = 1 << 17
	// MaxManifestSize bounds how much of a manifest object is read:
	// MaxChunks entries are about 18 MiB of JSON, plus an image config.
	MaxManifestSize = 32 << 20
	// maxFSTypeLen and maxSourceKeyLen bound the descriptive strings.
	maxFSTypeLen    = 32
	maxSourceKeyLen = 1024
	maxETagLen      = 1024
)

// Manifest describes one block image: a device of DeviceSize bytes whose
// contents are the Chunks, with zeros everywhere else. It is stored as
// JSON at ManifestKey(prefix, Source.Key).
type Manifest struct {
	Format      string `json:"format"`
	Version     int    `json:"version"`
	DeviceSize  int64  `json:"device_size"`
	FSType      string `json:"fs_type"`
	ChunkSize   int64  `json:"chunk_size"`
	Compression string `json:"compression"`
	Source      Source `json:"source"`
	// Config is the image's config, kept opaque: the block image only
	// carries it so that a host filling from the block image needs
	// neither the tarball nor a registry.
	Config json.RawMessage `json:"config,omitempty"`
	Chunks []Chunk         `json:"chunks"`
}

// Source is the tarball the image was converted from. A reader compares
// ETag with the tarball's own to tell a stale block image from a current
// one: the manifest key is derived from Key alone.
type Source struct {
	Key  string `json:"key"`
	ETag string `json:"etag"`
}

// Chunk is Length bytes of the device at Offset, stored zstd-compressed
// at ChunkKey(prefix, Digest). Digest is the sha256 of the uncompressed
// bytes, so images that share content share chunk objects.
type Chunk struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Digest string `json:"digest"`
	// CompressedSize is the size of the object the publisher uploaded or
	// found. It is informational (progress, download estimates): a
	// concurrent publisher with another encoder may have replaced the
	// object with different, equally valid, bytes; Fill checks the
	// object against maxCompressedSize(Length) and the digest instead.
	CompressedSize int64 `json:"compressed_size"`
}

// End is the first byte after the chunk.
func (c Chunk) End() int64 { return c.Offset + c.Length }

// Bytes is how many bytes of the device the chunks cover.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, c := range m.Chunks {
		n += c.Length
	}
	return n
}

// ChunkKey is the key of the chunk object with digest d ("sha256:<hex>")
// under prefix. The two-hex-digit fan-out spreads chunks over many key
// prefixes, which S3 scales request rates by.
func ChunkKey(prefix, d string) string {
	hex := strings.TrimPrefix(d, "sha256:")
	fan := hex
	if len(fan) > 2 {
		fan = fan[:2]
	}
	return prefix + "chunks/sha256/" + fan + "/" + hex
}

// ManifestKey is the key of the manifest of the block image converted
// from the tarball at sourceKey. It is the sha256 of the key rather than
// the key itself: a tarball key may be up to S3's whole 1024 bytes and
// contain anything ValidateKey lets through, while this is always short
// and plain. The manifest records the key it came from.
func ManifestKey(prefix, sourceKey string) string {
	sum := sha256.Sum256([]byte(sourceKey))
	return prefix + "manifests/" + hex.EncodeToString(sum[:]) + ".json"
}
