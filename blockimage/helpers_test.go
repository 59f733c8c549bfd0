package blockimage_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/blockimage"
)

// memStore is an in-memory Store that counts requests and records the
// order of puts, so tests can check dedup and "manifest last".
type memStore struct {
	mu      sync.Mutex
	objs    map[string][]byte
	puts    []string
	gets    []string
	exists  int
	failPut func(key string) error
}

func newMemStore() *memStore { return &memStore{objs: map[string][]byte{}} }

func (s *memStore) Exists(_ context.Context, key string) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exists++
	b, ok := s.objs[key]
	return int64(len(b)), ok, nil
}

func (s *memStore) Put(_ context.Context, key string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failPut != nil {
		if err := s.failPut(key); err != nil {
			return err
		}
	}
	s.objs[key] = bytes.Clone(data)
	s.puts = append(s.puts, key)
	return nil
}

func (s *memStore) Get(_ context.Context, key string) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets = append(s.gets, key)
	b, ok := s.objs[key]
	if !ok {
		return nil, 0, fmt.Errorf("no such key %q: %w", key, errdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (s *memStore) set(key string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[key] = data
}

func (s *memStore) del(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objs, key)
}

func (s *memStore) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts, s.gets, s.exists = nil, nil, 0
}

func (s *memStore) chunkKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.objs {
		if strings.Contains(k, "/chunks/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// memDevice is a device in memory that records which ranges were
// written.
type memDevice struct {
	mu     sync.Mutex
	data   []byte
	writes []blockimage.Extent
}

func newMemDevice(size int64) *memDevice { return &memDevice{data: make([]byte, size)} }

func (d *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *memDevice) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off+int64(len(p)) > int64(len(d.data)) {
		return 0, fmt.Errorf("write [%d, +%d) beyond the %d-byte device", off, len(p), len(d.data))
	}
	d.writes = append(d.writes, blockimage.Extent{Offset: off, Length: int64(len(p))})
	return copy(d.data[off:], p), nil
}

func (d *memDevice) sortedWrites() []blockimage.Extent {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := append([]blockimage.Extent(nil), d.writes...)
	sort.Slice(w, func(i, j int) bool { return w[i].Offset < w[j].Offset })
	return w
}

func randomBytes(n int64, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// image is a test device: random data in extents, zeros elsewhere.
type image struct {
	dev     *memDevice
	extents []blockimage.Extent
	meta    blockimage.Meta
}

const (
	MiB    = 1 << 20
	prefix = "blocks/"
)

func newImage(size int64, seed uint64, extents ...blockimage.Extent) *image {
	dev := newMemDevice(size)
	for i, e := range extents {
		copy(dev.data[e.Offset:], randomBytes(e.Length, seed+uint64(i)))
	}
	return &image{dev: dev, extents: extents, meta: blockimage.Meta{
		DeviceSize: size, FSType: "ext4",
		Source: blockimage.Source{Key: fmt.Sprintf("images/test-%d.tar", seed), ETag: `"etag"`},
		Config: []byte(`{"architecture":"amd64"}`),
	}}
}

func publish(t *testing.T, st blockimage.Store, img *image, opt blockimage.PublishOptions) (*blockimage.Manifest, blockimage.PublishStats) {
	t.Helper()
	if opt.Prefix == "" {
		opt.Prefix = prefix
	}
	m, stats, err := blockimage.Publish(context.Background(), st, img.dev, img.extents, img.meta, opt)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return m, stats
}

func sameBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("content differs first at byte %d (of %d)", i, len(want))
			}
		}
		t.Fatalf("content differs: %d bytes, want %d", len(got), len(want))
	}
}
