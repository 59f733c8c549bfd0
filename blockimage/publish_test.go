package blockimage_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/blockimage"
)

type E = blockimage.Extent

func TestPublishFillRoundTrip(t *testing.T) {
	st := newMemStore()
	// An extent that starts off the chunk grid, two adjacent extents
	// (merged, so cut as one), and an all-zero mapped range (dropped).
	img := newImage(64*MiB, 1, E{1 * MiB, 5 * MiB}, E{16 * MiB, 2 * MiB}, E{18 * MiB, 3*MiB + 4096})
	img.extents = append(img.extents, E{40 * MiB, 4 * MiB}) // mapped, but zeros
	m, stats := publish(t, st, img, blockimage.PublishOptions{})

	want := []E{{1 * MiB, 3 * MiB}, {4 * MiB, 2 * MiB}, {16 * MiB, 4 * MiB}, {20 * MiB, 1*MiB + 4096}}
	var got []E
	for _, c := range m.Chunks {
		got = append(got, E{c.Offset, c.Length})
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("chunks %v, want %v (cut on the 4 MiB grid, the zero chunk left out)", got, want)
	}
	if stats.ZeroChunks != 1 || stats.Uploaded != 4 || stats.Reused != 0 || stats.Chunks != 4 {
		t.Errorf("stats %+v", stats)
	}
	if last := st.puts[len(st.puts)-1]; last != blockimage.ManifestKey(prefix, img.meta.Source.Key) {
		t.Errorf("last put %q, want the manifest", last)
	}
	loaded, ok, err := blockimage.LoadManifest(context.Background(), st, prefix, img.meta.Source.Key)
	if err != nil || !ok {
		t.Fatalf("LoadManifest: %v, %v", ok, err)
	}
	if !reflect.DeepEqual(loaded, m) {
		t.Errorf("loaded manifest %+v\nwant %+v", loaded, m)
	}

	dst := newMemDevice(img.meta.DeviceSize)
	var done []int
	fs, err := blockimage.Fill(context.Background(), st, loaded, dst, blockimage.FillOptions{
		Prefix: prefix, OnChunk: func(i int) error { done = append(done, i); return nil }})
	if err != nil {
		t.Fatalf("Fill: %v", err)
	}
	sameBytes(t, dst.data, img.dev.data)
	if !reflect.DeepEqual(dst.sortedWrites(), want) {
		t.Errorf("writes %v, want only the chunks %v", dst.sortedWrites(), want)
	}
	if len(done) != 4 || fs.Written != 4 || fs.Bytes != m.Bytes() {
		t.Errorf("OnChunk saw %v; stats %+v", done, fs)
	}
}

// Images that share content share chunks: the second publish finds them
// (Exists) and uploads only what is new.
func TestPublishDedup(t *testing.T) {
	st := newMemStore()
	a := newImage(32*MiB, 7, E{0, 8 * MiB}, E{12 * MiB, 4 * MiB})
	publish(t, st, a, blockimage.PublishOptions{})
	n := len(st.chunkKeys())

	b := newImage(32*MiB, 7, E{0, 8 * MiB}, E{12 * MiB, 4 * MiB})
	b.meta.Source.Key = "images/other.tar"
	copy(b.dev.data[12*MiB:], randomBytes(4*MiB, 1000)) // one chunk differs
	st.reset()
	_, stats := publish(t, st, b, blockimage.PublishOptions{})
	if stats.Uploaded != 1 || stats.Reused != 2 {
		t.Errorf("stats %+v, want 1 uploaded and 2 reused", stats)
	}
	if len(st.puts) != 2 || len(st.chunkKeys()) != n+1 {
		t.Errorf("puts %v; %d chunk objects, want %d", st.puts, len(st.chunkKeys()), n+1)
	}
}

// A failed chunk upload publishes no manifest: readers never see a
// manifest whose chunks are not all in.
func TestPublishNoManifestOnFailure(t *testing.T) {
	st := newMemStore()
	st.failPut = func(key string) error {
		if strings.Contains(key, "/chunks/") && len(st.puts) == 2 {
			return errors.New("injected")
		}
		return nil
	}
	img := newImage(32*MiB, 3, E{0, 16 * MiB})
	_, _, err := blockimage.Publish(context.Background(), st, img.dev, img.extents, img.meta, blockimage.PublishOptions{Prefix: prefix, Parallelism: 1})
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Publish = %v, want the injected failure", err)
	}
	if _, ok, _ := blockimage.LoadManifest(context.Background(), st, prefix, img.meta.Source.Key); ok {
		t.Error("a manifest was published")
	}
}

// An object of a size no encoding can have is a broken upload and is
// replaced rather than reused.
func TestPublishReplacesBrokenChunk(t *testing.T) {
	st := newMemStore()
	img := newImage(8*MiB, 4, E{0, 4 * MiB})
	m, _ := publish(t, st, img, blockimage.PublishOptions{})
	key := blockimage.ChunkKey(prefix, m.Chunks[0].Digest)
	st.set(key, nil)
	if _, stats := publish(t, st, img, blockimage.PublishOptions{}); stats.Uploaded != 1 {
		t.Errorf("stats %+v: the empty object was reused", stats)
	}
	dst := newMemDevice(img.meta.DeviceSize)
	if _, err := blockimage.Fill(context.Background(), st, m, dst, blockimage.FillOptions{Prefix: prefix}); err != nil {
		t.Fatal(err)
	}
}

func TestPublishBadInput(t *testing.T) {
	good := blockimage.Meta{DeviceSize: 16 * MiB, FSType: "ext4", Source: blockimage.Source{Key: "k"}}
	for _, tc := range []struct {
		name    string
		meta    func(*blockimage.Meta)
		extents []E
		opt     blockimage.PublishOptions
	}{
		{name: "unsorted", extents: []E{{8 * MiB, MiB}, {0, MiB}}},
		{name: "overlapping", extents: []E{{0, 2 * MiB}, {MiB, 2 * MiB}}},
		{name: "beyond device", extents: []E{{15 * MiB, 2 * MiB}}},
		{name: "zero length", extents: []E{{0, 0}}},
		{name: "unaligned", extents: []E{{100, 4096}}},
		{name: "negative", extents: []E{{-4096, 4096}}},
		{name: "device size", meta: func(m *blockimage.Meta) { m.DeviceSize = 0 }},
		{name: "device size huge", meta: func(m *blockimage.Meta) { m.DeviceSize = 1 << 50 }},
		{name: "fs type", meta: func(m *blockimage.Meta) { m.FSType = "../x" }},
		{name: "no source", meta: func(m *blockimage.Meta) { m.Source.Key = "" }},
		{name: "config", meta: func(m *blockimage.Meta) { m.Config = []byte("{") }},
		{name: "chunk size", opt: blockimage.PublishOptions{ChunkSize: 1000}},
		{name: "chunk size huge", opt: blockimage.PublishOptions{ChunkSize: 1 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta := good
			if tc.meta != nil {
				tc.meta(&meta)
			}
			st := newMemStore()
			dev := newMemDevice(16 * MiB)
			_, _, err := blockimage.Publish(context.Background(), st, dev, tc.extents, meta, tc.opt)
			if !errors.Is(err, blockimage.ErrInvalidExtents) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("Publish = %v, want ErrInvalidExtents", err)
			}
			if len(st.puts) != 0 {
				t.Errorf("puts %v", st.puts)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	d := "sha256:abcdef0000000000000000000000000000000000000000000000000000000000"
	if k := blockimage.ChunkKey("p/", d); k != "p/chunks/sha256/ab/"+d[7:] {
		t.Errorf("ChunkKey = %q", k)
	}
	k := blockimage.ManifestKey("p/", "images/a.tar")
	if !strings.HasPrefix(k, "p/manifests/") || !strings.HasSuffix(k, ".json") || len(k) != len("p/manifests/")+64+5 {
		t.Errorf("ManifestKey = %q", k)
	}
	if k == blockimage.ManifestKey("p/", "images/b.tar") {
		t.Error("two sources, one manifest key")
	}
}
