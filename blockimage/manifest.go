package blockimage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"unicode/utf8"
)

var (
	digestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	fsTypeRe = regexp.MustCompile(`^[a-z0-9_]+$`)
)

// ParseManifest reads and checks a manifest. At most MaxManifestSize bytes
// are read, and the chunk table is decoded entry by entry so that no more
// than MaxChunks entries are ever held, however small each is written:
// CPU and memory stay bounded whatever the bucket holds.
func ParseManifest(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxManifestSize {
		return nil, badField("(manifest)", "more than %d bytes", MaxManifestSize)
	}
	var w wireManifest
	if err := json.Unmarshal(data, &w); err != nil {
		var me *ManifestError
		if errors.As(err, &me) {
			return nil, me
		}
		return nil, badField("(manifest)", "%v", err)
	}
	m := &w.Manifest
	m.Chunks = w.Chunks
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// wireManifest decodes Chunks through chunkTable, which counts as it goes.
type wireManifest struct {
	Manifest
	Chunks chunkTable `json:"chunks"`
}

type chunkTable []Chunk

func (t *chunkTable) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return badField("chunks", "%v", err)
	}
	if tok == nil {
		*t = nil
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return badField("chunks", "not an array")
	}
	for dec.More() {
		if len(*t) >= MaxChunks {
			return badField("chunks", "more than %d chunks", MaxChunks)
		}
		var c Chunk
		if err := dec.Decode(&c); err != nil {
			return badField(fmt.Sprintf("chunks[%d]", len(*t)), "%v", err)
		}
		*t = append(*t, c)
	}
	return nil
}

// Validate checks everything Fill relies on, naming the first bad field:
// the format and version, a device size that is positive, whole sectors
// and at most MaxDeviceSize, a chunk size within MaxChunkSize, and chunks
// that are sorted, disjoint, inside the device, of 1..chunk_size whole
// sectors, with canonical digests and plausible compressed sizes.
func (m *Manifest) Validate() error {
	switch {
	case m.Format != Format:
		return badField("format", "%q, want %q", trunc(m.Format), Format)
	case m.Version != Version:
		return badField("version", "%d is not supported (this reader knows version %d)", m.Version, Version)
	case m.Compression != Compression:
		return badField("compression", "%q, want %q", trunc(m.Compression), Compression)
	}
	if err := checkDevice(m.DeviceSize, m.ChunkSize, m.FSType); err != nil {
		var me *ManifestError
		if errors.As(err, &me) {
			return me
		}
		return err
	}
	if err := checkSource(m.Source); err != nil {
		return err
	}
	if len(m.Config) > 0 && !json.Valid(m.Config) {
		return badField("config", "not valid JSON")
	}
	if len(m.Chunks) > MaxChunks {
		return badField("chunks", "%d chunks, more than %d", len(m.Chunks), MaxChunks)
	}
	var end int64
	for i, c := range m.Chunks {
		f := func(name string) string { return fmt.Sprintf("chunks[%d].%s", i, name) }
		switch {
		case c.Offset < 0 || c.Offset%SectorSize != 0:
			return badField(f("offset"), "%d is not a non-negative multiple of %d", c.Offset, SectorSize)
		case c.Offset < end:
			return badField(f("offset"), "%d is before the end (%d) of the chunk before it: chunks must be sorted and disjoint", c.Offset, end)
		case c.Length <= 0 || c.Length%SectorSize != 0:
			return badField(f("length"), "%d is not a positive multiple of %d", c.Length, SectorSize)
		case c.Length > m.ChunkSize:
			return badField(f("length"), "%d is more than chunk_size %d", c.Length, m.ChunkSize)
		case c.Offset > m.DeviceSize-c.Length: // no overflow: both bounded
			return badField(f("offset"), "chunk [%d, %d) ends beyond device_size %d", c.Offset, c.Offset+c.Length, m.DeviceSize)
		case !digestRe.MatchString(c.Digest):
			return badField(f("digest"), "%q, want sha256:<64 lowercase hex>", trunc(c.Digest))
		case c.CompressedSize <= 0 || c.CompressedSize > maxCompressedSize(c.Length):
			return badField(f("compressed_size"), "%d is outside 1..%d for a chunk of %d bytes", c.CompressedSize, maxCompressedSize(c.Length), c.Length)
		}
		end = c.End()
	}
	return nil
}

// checkDevice checks what Publish is told and a manifest says about the
// device as a whole. Its errors name manifest fields; Publish rewraps them.
func checkDevice(size, chunkSize int64, fsType string) error {
	switch {
	case size <= 0 || size%SectorSize != 0:
		return badField("device_size", "%d is not a positive multiple of %d", size, SectorSize)
	case size > MaxDeviceSize:
		return badField("device_size", "%d is more than %d", size, int64(MaxDeviceSize))
	case chunkSize <= 0 || chunkSize%SectorSize != 0 || chunkSize > MaxChunkSize:
		return badField("chunk_size", "%d is not a positive multiple of %d of at most %d", chunkSize, SectorSize, MaxChunkSize)
	case len(fsType) == 0 || len(fsType) > maxFSTypeLen || !fsTypeRe.MatchString(fsType):
		return badField("fs_type", "%q, want 1..%d of [a-z0-9_]", trunc(fsType), maxFSTypeLen)
	}
	return nil
}

func checkSource(s Source) error {
	switch {
	case s.Key == "" || len(s.Key) > maxSourceKeyLen || !utf8.ValidString(s.Key):
		return badField("source.key", "want 1..%d bytes of UTF-8", maxSourceKeyLen)
	case len(s.ETag) > maxETagLen || !utf8.ValidString(s.ETag):
		return badField("source.etag", "want at most %d bytes of UTF-8", maxETagLen)
	}
	return nil
}

// maxCompressedSize is the most a zstd encoding of n bytes can take:
// libzstd's ZSTD_COMPRESSBOUND, plus room for a frame header and
// checksum. Anything larger is not an encoding of the chunk, and Fill
// reads no more than this.
func maxCompressedSize(n int64) int64 {
	b := n + n>>8
	if n < 128<<10 {
		b += (128<<10 - n) >> 11
	}
	return b + 64
}

// trunc keeps a hostile string from filling an error message.
func trunc(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
