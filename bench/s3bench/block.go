package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/klauspost/compress/zstd"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// blockPrefix is where the benchmark publishes its block image.
const blockPrefix = "blocks/"

// blockBase is the ext4 base device the block image is published from,
// and the manifest that publish put in the bucket.
type blockBase struct {
	dev     *device
	m       *blockimage.Manifest
	publish blockimage.PublishStats
	took    time.Duration
}

// publishBase fills a fresh ext4 thin device from the tarball at key the
// way the importer does (streamed extract, syncfs), unmounts it and
// publishes its mapped ranges as a block image: the same image, as
// blocks, that the tarball runs extract.
func publishBase(ctx context.Context, pool *dmpool.Pool, id uint32, size uint64, dir string, cl *s3fetch.Client, key, etag string) (*blockBase, error) {
	d, err := newDevice(ctx, pool, id, size, dir, true)
	if err != nil {
		return nil, err
	}
	b := &blockBase{dev: d}
	ok := false
	defer func() {
		if !ok {
			d.remove(ctx)
		}
	}()
	obj, err := cl.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	_, err = extract.Extract(ctx, obj, d.dir, extract.Options{Mode: extract.Rootfs})
	obj.Close()
	if err != nil {
		return nil, fmt.Errorf("extracting the base: %w", err)
	}
	// Unmounted, the device is what a base is: read-only, every block
	// of the filesystem on it.
	if err := mount.UnmountAll(d.dir, 0); err != nil {
		return nil, err
	}
	os.Remove(d.dir)
	d.dir = ""
	mapped, err := thinmeta.ReadPoolMapped(ctx, pool.Name(), id)
	if err != nil {
		return nil, fmt.Errorf("mapped ranges of the base: %w", err)
	}
	ext := make([]blockimage.Extent, len(mapped.Extents))
	for i, e := range mapped.Extents {
		ext[i] = blockimage.Extent{Offset: int64(e.Offset), Length: int64(e.Length)}
	}
	f, err := os.Open(d.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	start := time.Now()
	b.m, b.publish, err = blockimage.Publish(ctx, blockimage.NewS3Store(cl), f, ext,
		blockimage.Meta{DeviceSize: int64(size), FSType: "ext4", Source: blockimage.Source{Key: key, ETag: etag}},
		blockimage.PublishOptions{Prefix: blockPrefix})
	if err != nil {
		return nil, fmt.Errorf("publishing the base: %w", err)
	}
	b.took = time.Since(start)
	ok = true
	return b, nil
}

// timedStore is a Store that adds up the time its fetches take (the GET
// and reading the body), summed over Fill's workers.
type timedStore struct {
	blockimage.Store
	fetch atomic.Int64 // nanoseconds
}

func (s *timedStore) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	start := time.Now()
	rc, n, err := s.Store.Get(ctx, key)
	s.fetch.Add(int64(time.Since(start)))
	if err != nil {
		return nil, 0, err
	}
	return &timedBody{ReadCloser: rc, s: s}, n, nil
}

type timedBody struct {
	io.ReadCloser
	s *timedStore
}

func (b *timedBody) Read(p []byte) (int, error) {
	start := time.Now()
	n, err := b.ReadCloser.Read(p)
	b.s.fetch.Add(int64(time.Since(start)))
	return n, err
}

// blockResult is one blockimage.Fill onto a fresh raw thin device.
type blockResult struct {
	Total time.Duration // Fill and fdatasync
	Sync  time.Duration // the fdatasync alone
	Fetch time.Duration // in Store.Get and body reads, summed over workers
	Stats blockimage.FillStats
}

// blockRun times blockimage.Fill of m onto a fresh raw thin device,
// flushed, as the fill of a base would be.
func blockRun(ctx context.Context, pool *dmpool.Pool, id uint32, size uint64, st blockimage.Store, m *blockimage.Manifest, par int) (blockResult, error) {
	var res blockResult
	d, err := newDevice(ctx, pool, id, size, "", false)
	if err != nil {
		return res, err
	}
	defer d.remove(ctx)
	dropCaches()
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	if err != nil {
		return res, err
	}
	defer f.Close()
	ts := &timedStore{Store: st}
	start := time.Now()
	res.Stats, err = blockimage.Fill(ctx, ts, m, f, blockimage.FillOptions{Prefix: blockPrefix, Parallelism: par})
	if err != nil {
		return res, err
	}
	syncStart := time.Now()
	if err := f.Sync(); err != nil {
		return res, err
	}
	res.Sync = time.Since(syncStart)
	res.Total = time.Since(start)
	res.Fetch = time.Duration(ts.fetch.Load())
	return res, nil
}

// phases is one pass over the image's chunks, one at a time, timing each
// step Fill does on its own: what each costs on one CPU, so the table
// shows which one a Fill on this machine's CPUs runs out of.
type phases struct {
	Fetch, Decompress, Verify, Write, Sync time.Duration
	Bytes, Compressed                      int64
}

// phaseRun is that pass, writing to a fresh raw thin device.
func phaseRun(ctx context.Context, pool *dmpool.Pool, id uint32, size uint64, st blockimage.Store, m *blockimage.Manifest) (phases, error) {
	var p phases
	d, err := newDevice(ctx, pool, id, size, "", false)
	if err != nil {
		return p, err
	}
	defer d.remove(ctx)
	dropCaches()
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	if err != nil {
		return p, err
	}
	defer f.Close()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(blockimage.MaxChunkSize))
	if err != nil {
		return p, err
	}
	defer dec.Close()
	var comp, buf []byte
	for _, c := range m.Chunks {
		t := time.Now()
		rc, _, err := st.Get(ctx, blockimage.ChunkKey(blockPrefix, c.Digest))
		if err != nil {
			return p, err
		}
		comp, err = readAllInto(rc, comp[:0])
		rc.Close()
		if err != nil {
			return p, err
		}
		p.Fetch += time.Since(t)
		t = time.Now()
		buf, err = dec.DecodeAll(comp, buf[:0])
		if err != nil {
			return p, err
		}
		p.Decompress += time.Since(t)
		if int64(len(buf)) != c.Length {
			return p, fmt.Errorf("chunk at %d: %d bytes, want %d", c.Offset, len(buf), c.Length)
		}
		t = time.Now()
		sum := sha256.Sum256(buf)
		p.Verify += time.Since(t)
		if fmt.Sprintf("sha256:%x", sum) != c.Digest {
			return p, fmt.Errorf("chunk at %d: digest mismatch", c.Offset)
		}
		t = time.Now()
		if _, err := f.WriteAt(buf, c.Offset); err != nil {
			return p, err
		}
		p.Write += time.Since(t)
		p.Bytes += c.Length
		p.Compressed += int64(len(comp))
	}
	t := time.Now()
	if err := f.Sync(); err != nil {
		return p, err
	}
	p.Sync = time.Since(t)
	return p, nil
}

func readAllInto(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}
