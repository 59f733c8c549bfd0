package importer

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/metadata"
)

// blockConfig is what this importer keeps in a block image's opaque
// config: the figures of the tarball import the base came from, so that
// a host filling from the block image registers the very image (same
// diff id, hence the same chain id and base name) without the tarball.
type blockConfig struct {
	Layer blockLayer `json:"flyio_layer"`
}

type blockLayer struct {
	DiffID          string `json:"diff_id"`
	Digest          string `json:"digest"`
	Compression     string `json:"compression,omitempty"`
	CompressedBytes int64  `json:"compressed_bytes"`
	Bytes           int64  `json:"bytes"`
	Entries         int    `json:"entries"`
}

func blockConfigOf(r *metadata.Run) (json.RawMessage, error) {
	return json.Marshal(blockConfig{Layer: blockLayer{
		DiffID: r.DiffID, Digest: r.Digest, Compression: r.Compression,
		CompressedBytes: r.CompressedBytes, Bytes: r.Bytes, Entries: r.Entries,
	}})
}

// resultOf is the extract.Result a block fill stands in for. The config
// comes from the bucket: the digests name the base and the image, so
// they must be digests.
func resultOf(m *blockimage.Manifest) (extract.Result, error) {
	var c blockConfig
	if len(m.Config) == 0 {
		return extract.Result{}, fmt.Errorf("block image of %q has no config: %w", m.Source.Key, blockimage.ErrInvalidManifest)
	}
	if err := json.Unmarshal(m.Config, &c); err != nil {
		return extract.Result{}, fmt.Errorf("block image of %q: config: %v: %w", m.Source.Key, err, blockimage.ErrInvalidManifest)
	}
	l := c.Layer
	for name, v := range map[string]string{"diff_id": l.DiffID, "digest": l.Digest} {
		if _, err := digest.Parse(v); err != nil {
			return extract.Result{}, fmt.Errorf("block image of %q: config flyio_layer.%s %q: %v: %w", m.Source.Key, name, v, err, blockimage.ErrInvalidManifest)
		}
	}
	switch l.Compression {
	case "", "none", "gzip", "zstd":
	default:
		return extract.Result{}, fmt.Errorf("block image of %q: config flyio_layer.compression %q: %w", m.Source.Key, l.Compression, blockimage.ErrInvalidManifest)
	}
	return extract.Result{
		DiffID: l.DiffID, Digest: l.Digest, Compression: l.Compression,
		CompressedBytes: l.CompressedBytes, Bytes: l.Bytes, Entries: l.Entries,
	}, nil
}
