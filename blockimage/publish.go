package blockimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// DefaultParallelism is how many chunks Publish and Fill work on at once
// unless told otherwise.
const DefaultParallelism = 8

// Meta is what Publish records about the image besides its chunks.
type Meta struct {
	DeviceSize int64
	FSType     string
	Source     Source
	Config     json.RawMessage // optional; must be valid JSON
}

// PublishOptions tunes Publish. The zero value is the defaults with no
// prefix.
type PublishOptions struct {
	Prefix      string // the [s3] block_prefix
	ChunkSize   int64  // 0: DefaultChunkSize
	Parallelism int    // 0: DefaultParallelism
}

// PublishStats says what a Publish did, for the operator.
type PublishStats struct {
	Chunks        int   // in the manifest
	ZeroChunks    int   // all zeros, left out of the manifest
	Uploaded      int   // chunks put
	Reused        int   // chunks already in the store
	Bytes         int64 // uncompressed bytes in the manifest
	UploadedBytes int64 // compressed bytes put
}

// Publish stores the block image of the device src: extents (its mapped
// ranges, sorted and disjoint) are cut into chunks, compressed and put
// under ChunkKey unless a chunk of that digest is already there, then the
// manifest is put at ManifestKey(prefix, meta.Source.Key). The manifest
// goes last, so one exists only once every chunk it names is in the
// store. An all-zero chunk is left out of the manifest, as a hole: a
// fresh thin device reads zeros there without being written.
func Publish(ctx context.Context, st Store, src io.ReaderAt, extents []Extent, meta Meta, opt PublishOptions) (*Manifest, PublishStats, error) {
	var stats PublishStats
	if opt.ChunkSize == 0 {
		opt.ChunkSize = DefaultChunkSize
	}
	if opt.Parallelism <= 0 {
		opt.Parallelism = DefaultParallelism
	}
	if err := checkMeta(meta, opt.ChunkSize); err != nil {
		return nil, stats, err
	}
	ext, err := normalize(extents, meta.DeviceSize)
	if err != nil {
		return nil, stats, err
	}
	plan := cut(ext, opt.ChunkSize)
	enc, err := newEncoder(opt.Parallelism)
	if err != nil {
		return nil, stats, err
	}
	defer enc.Close()

	chunks := make([]Chunk, len(plan))
	bufs := make([][]byte, opt.Parallelism)
	var zeros, uploaded, reused atomic.Int64
	var upBytes atomic.Int64
	err = forEach(ctx, len(plan), opt.Parallelism, func(ctx context.Context, w, i int) error {
		p := plan[i]
		if bufs[w] == nil {
			bufs[w] = make([]byte, opt.ChunkSize)
		}
		buf := bufs[w][:p.Length]
		if n, err := src.ReadAt(buf, p.Offset); n < len(buf) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading the device at [%d, +%d): %w", p.Offset, p.Length, err)
		}
		if isZero(buf) {
			zeros.Add(1)
			return nil // Digest stays empty: dropped below.
		}
		sum := sha256.Sum256(buf)
		c := Chunk{Offset: p.Offset, Length: p.Length, Digest: "sha256:" + hex.EncodeToString(sum[:])}
		key := ChunkKey(opt.Prefix, c.Digest)
		size, ok, err := st.Exists(ctx, key)
		if err != nil {
			return fmt.Errorf("chunk at %d: %w", c.Offset, err)
		}
		// An object of a size no encoding of the chunk can have is a
		// broken upload: replace it rather than publish a manifest
		// whose fills would fail.
		if ok && size > 0 && size <= maxCompressedSize(c.Length) {
			c.CompressedSize = size
			reused.Add(1)
		} else {
			comp := enc.EncodeAll(buf, nil)
			if err := st.Put(ctx, key, comp); err != nil {
				return fmt.Errorf("chunk at %d: %w", c.Offset, err)
			}
			c.CompressedSize = int64(len(comp))
			uploaded.Add(1)
			upBytes.Add(c.CompressedSize)
		}
		chunks[i] = c
		return nil
	})
	if err != nil {
		return nil, stats, err
	}
	m := &Manifest{
		Format: Format, Version: Version, Compression: Compression,
		DeviceSize: meta.DeviceSize, FSType: meta.FSType, ChunkSize: opt.ChunkSize,
		Source: meta.Source, Config: meta.Config,
		Chunks: make([]Chunk, 0, len(chunks)-int(zeros.Load())),
	}
	for _, c := range chunks {
		if c.Digest != "" {
			m.Chunks = append(m.Chunks, c)
		}
	}
	// What readers would refuse must not be published: this catches a
	// device with more chunks than MaxChunks, for one.
	if err := m.Validate(); err != nil {
		return nil, stats, fmt.Errorf("the manifest Publish built: %w", err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, stats, err
	}
	if len(data) > MaxManifestSize {
		return nil, stats, fmt.Errorf("the manifest is %d bytes, more than readers accept (%d): %w", len(data), MaxManifestSize, ErrInvalidExtents)
	}
	if err := st.Put(ctx, ManifestKey(opt.Prefix, meta.Source.Key), data); err != nil {
		return nil, stats, fmt.Errorf("manifest: %w", err)
	}
	stats = PublishStats{
		Chunks: len(m.Chunks), ZeroChunks: int(zeros.Load()),
		Uploaded: int(uploaded.Load()), Reused: int(reused.Load()),
		Bytes: m.Bytes(), UploadedBytes: upBytes.Load(),
	}
	return m, stats, nil
}

// checkMeta refuses what no reader would accept, as ErrInvalidExtents:
// the caller's mistake, not the bucket's.
func checkMeta(meta Meta, chunkSize int64) error {
	err := checkDevice(meta.DeviceSize, chunkSize, meta.FSType)
	if err == nil {
		err = checkSource(meta.Source)
	}
	if err == nil && len(meta.Config) > 0 && !json.Valid(meta.Config) {
		err = badField("config", "not valid JSON")
	}
	var me *ManifestError
	if errors.As(err, &me) {
		return fmt.Errorf("publish: %s: %s: %w", me.Field, me.Reason, ErrInvalidExtents)
	}
	return err
}

// zeroBlock is what isZero compares with: bytes.Equal runs at memcmp
// speed, far ahead of a byte loop.
var zeroBlock [64 << 10]byte

// isZero reports whether b is all zero bytes.
func isZero(b []byte) bool {
	zero := zeroBlock[:]
	for len(b) > 0 {
		n := min(len(b), len(zero))
		if !bytes.Equal(b[:n], zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
