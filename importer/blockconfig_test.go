package importer

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/metadata"
)

func TestBlockConfigRoundTrip(t *testing.T) {
	r := &metadata.Run{DiffID: "sha256:" + hex64('a'), Digest: "sha256:" + hex64('b'), Compression: "gzip", CompressedBytes: 10, Bytes: 20, Entries: 3}
	cfg, err := blockConfigOf(r)
	if err != nil {
		t.Fatal(err)
	}
	res, err := resultOf(&blockimage.Manifest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if res.DiffID != r.DiffID || res.Digest != r.Digest || res.Compression != "gzip" || res.CompressedBytes != 10 || res.Bytes != 20 || res.Entries != 3 {
		t.Fatalf("result %+v from run %+v", res, r)
	}
}

// TestBlockConfigIsUntrusted: the config comes from the bucket; what
// would name a base or a blob must be a digest.
func TestBlockConfigIsUntrusted(t *testing.T) {
	for name, cfg := range map[string]string{
		"none":        ``,
		"not json":    `{`,
		"no diff id":  `{"flyio_layer":{"digest":"sha256:` + hex64('b') + `"}}`,
		"bad digest":  `{"flyio_layer":{"diff_id":"sha256:` + hex64('a') + `","digest":"../x"}}`,
		"compression": `{"flyio_layer":{"diff_id":"sha256:` + hex64('a') + `","digest":"sha256:` + hex64('b') + `","compression":"lz4"}}`,
	} {
		if _, err := resultOf(&blockimage.Manifest{Config: json.RawMessage(cfg)}); !errors.Is(err, blockimage.ErrInvalidManifest) {
			t.Errorf("%s: %v, want ErrInvalidManifest", name, err)
		}
	}
}

func TestChunkTableTellsManifestsApart(t *testing.T) {
	a := &blockimage.Manifest{DeviceSize: 1 << 20, Chunks: []blockimage.Chunk{{Offset: 0, Length: 512, Digest: "sha256:" + hex64('a')}}}
	b := *a
	b.Chunks = []blockimage.Chunk{{Offset: 512, Length: 512, Digest: "sha256:" + hex64('a')}}
	if chunkTable(a) == chunkTable(&b) || chunkTable(a) != chunkTable(a) {
		t.Fatal("chunkTable does not identify the chunk table")
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
