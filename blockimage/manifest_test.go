package blockimage_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/blockimage"
)

const d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

// validManifest is a small manifest as a generic JSON object, for tests
// to break one field of.
func validManifest() map[string]any {
	return map[string]any{
		"format": blockimage.Format, "version": 1, "device_size": 64 * MiB, "fs_type": "ext4",
		"chunk_size": 4 * MiB, "compression": "zstd",
		"source": map[string]any{"key": "images/a.tar", "etag": `"x"`},
		"config": map[string]any{"architecture": "amd64"},
		"chunks": []any{
			map[string]any{"offset": 0, "length": 4 * MiB, "digest": d1, "compressed_size": 1000},
			map[string]any{"offset": 8 * MiB, "length": 4096, "digest": d1, "compressed_size": 100},
		},
	}
}

func chunk(m map[string]any, i int) map[string]any { return m["chunks"].([]any)[i].(map[string]any) }

func parse(t *testing.T, v any) (*blockimage.Manifest, error) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return blockimage.ParseManifest(bytes.NewReader(b))
}

func TestParseManifestValid(t *testing.T) {
	m, err := parse(t, validManifest())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Chunks) != 2 || m.Chunks[1].Offset != 8*MiB || m.Bytes() != 4*MiB+4096 || string(m.Config) != `{"architecture":"amd64"}` {
		t.Errorf("%+v", m)
	}
	// A newer writer may add fields; a v1 reader ignores them.
	v := validManifest()
	v["comment"] = "hello"
	if _, err := parse(t, v); err != nil {
		t.Errorf("unknown field: %v", err)
	}
}

// Manifests come from a bucket: each way of being wrong is refused,
// naming the field.
func TestParseManifestHostile(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(m map[string]any)
	}{
		{"format", func(m map[string]any) { m["format"] = "casync" }},
		{"version", func(m map[string]any) { m["version"] = 2 }},
		{"version", func(m map[string]any) { delete(m, "version") }},
		{"compression", func(m map[string]any) { m["compression"] = "xz" }},
		{"device_size", func(m map[string]any) { m["device_size"] = 0 }},
		{"device_size", func(m map[string]any) { m["device_size"] = -4096 }},
		{"device_size", func(m map[string]any) { m["device_size"] = int64(1) << 62 }},
		{"device_size", func(m map[string]any) { m["device_size"] = 64*MiB + 1 }},
		{"chunk_size", func(m map[string]any) { m["chunk_size"] = 1 << 30 }},
		{"chunk_size", func(m map[string]any) { m["chunk_size"] = 0 }},
		{"fs_type", func(m map[string]any) { m["fs_type"] = "" }},
		{"fs_type", func(m map[string]any) { m["fs_type"] = "ext4\x1b[2J" }},
		{"source.key", func(m map[string]any) { m["source"] = map[string]any{} }},
		{"chunks[1].offset", func(m map[string]any) { chunk(m, 1)["offset"] = 2 * MiB }},                            // overlaps
		{"chunks[1].offset", func(m map[string]any) { chunk(m, 0)["offset"] = 8 * MiB; chunk(m, 1)["offset"] = 0 }}, // unsorted
		{"chunks[1].offset", func(m map[string]any) { chunk(m, 1)["offset"] = 64 * MiB }},                           // beyond
		{"chunks[1].offset", func(m map[string]any) { chunk(m, 1)["offset"] = 64*MiB - 512 }},                       // straddles the end
		{"chunks[1].offset", func(m map[string]any) { chunk(m, 1)["offset"] = int64(1)<<62 + 8*MiB }},               // would overflow
		{"chunks[1].offset", func(m map[string]any) { chunk(m, 1)["offset"] = 8*MiB + 1 }},
		{"chunks[0].offset", func(m map[string]any) { chunk(m, 0)["offset"] = -512 }},
		{"chunks[0].length", func(m map[string]any) { chunk(m, 0)["length"] = 0 }},
		{"chunks[0].length", func(m map[string]any) { chunk(m, 0)["length"] = 8 * MiB }}, // > chunk_size
		{"chunks[0].length", func(m map[string]any) { chunk(m, 0)["length"] = 1000 }},
		{"chunks[0].digest", func(m map[string]any) { chunk(m, 0)["digest"] = "sha256:../../../x" }},
		{"chunks[0].digest", func(m map[string]any) { chunk(m, 0)["digest"] = strings.ToUpper(d1) }},
		{"chunks[0].digest", func(m map[string]any) { chunk(m, 0)["digest"] = "sha512:" + d1[7:] }},
		{"chunks[0].compressed_size", func(m map[string]any) { chunk(m, 0)["compressed_size"] = 0 }},
		{"chunks[0].compressed_size", func(m map[string]any) { chunk(m, 0)["compressed_size"] = 8 * MiB }},
		{"chunks[0]", func(m map[string]any) { chunk(m, 0)["length"] = 1.5 }},
		{"chunks", func(m map[string]any) { m["chunks"] = "lots" }},
		{"(manifest)", func(m map[string]any) { m["device_size"] = "big" }},
	} {
		m := validManifest()
		tc.edit(m)
		_, err := parse(t, m)
		var me *blockimage.ManifestError
		if !errors.As(err, &me) || me.Field != tc.field {
			t.Errorf("%s: got %v, want an error on field %s", tc.field, err, tc.field)
			continue
		}
		if !errors.Is(err, blockimage.ErrInvalidManifest) || !errdefs.IsDataLoss(err) {
			t.Errorf("%s: %v is not ErrInvalidManifest", tc.field, err)
		}
	}
}

// The chunk table is counted as it is decoded: a manifest of many tiny
// entries fails at MaxChunks+1 instead of being held whole.
func TestParseManifestTooManyChunks(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"format":"flyio-block-image","version":1,"chunks":[`)
	for i := range blockimage.MaxChunks + 10 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("{}")
	}
	b.WriteString("]}")
	_, err := blockimage.ParseManifest(&b)
	var me *blockimage.ManifestError
	if !errors.As(err, &me) || me.Field != "chunks" || !strings.Contains(me.Reason, "more than") {
		t.Fatalf("ParseManifest = %v", err)
	}
}

func TestParseManifestTooLarge(t *testing.T) {
	big := bytes.Repeat([]byte(" "), blockimage.MaxManifestSize+1)
	_, err := blockimage.ParseManifest(bytes.NewReader(big))
	if !errors.Is(err, blockimage.ErrInvalidManifest) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("ParseManifest = %v", err)
	}
}

func TestLoadManifest(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	if _, ok, err := blockimage.LoadManifest(ctx, st, prefix, "images/a.tar"); ok || err != nil {
		t.Fatalf("missing manifest: %v, %v", ok, err)
	}
	b, _ := json.Marshal(validManifest())
	// Stored under another source's key: refused, naming the mismatch.
	st.set(blockimage.ManifestKey(prefix, "images/b.tar"), b)
	if _, _, err := blockimage.LoadManifest(ctx, st, prefix, "images/b.tar"); !errors.Is(err, blockimage.ErrInvalidManifest) || !strings.Contains(err.Error(), "source.key") {
		t.Errorf("manifest of another source: %v", err)
	}
	st.set(blockimage.ManifestKey(prefix, "images/a.tar"), b)
	if m, ok, err := blockimage.LoadManifest(ctx, st, prefix, "images/a.tar"); !ok || err != nil || m.Source.Key != "images/a.tar" {
		t.Errorf("LoadManifest = %v, %v, %v", m, ok, err)
	}
}
