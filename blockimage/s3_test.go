package blockimage_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// versityStore is the S3Store on a real versitygw gateway, with parts as
// large as a chunk so that each chunk is one GET, and a download queue
// as deep as the fill is wide.
func versityStore(t *testing.T) (*blockimage.S3Store, *s3test.Server) {
	t.Helper()
	srv := s3test.Start(t)
	cfg := srv.Config()
	cfg.PartSize = blockimage.MaxChunkSize
	cfg.DownloadQueueSize = blockimage.DefaultParallelism
	return blockimage.NewS3Store(srv.Client(t, cfg)), srv
}

// Publish, a second publish that reuses every chunk, and fills from a
// real S3 server, including a missing chunk named by its key.
func TestVersityGWPublishFill(t *testing.T) {
	st, srv := versityStore(t)
	ctx := context.Background()
	img := newImage(48*MiB, 31, E{0, 9 * MiB}, E{20 * MiB, 4096}, E{32 * MiB, 8 * MiB})
	m, stats := publish(t, st, img, blockimage.PublishOptions{})
	if stats.Uploaded != len(m.Chunks) || stats.Reused != 0 {
		t.Errorf("first publish %+v", stats)
	}
	if _, again := publish(t, st, img, blockimage.PublishOptions{}); again.Uploaded != 0 || again.Reused != len(m.Chunks) {
		t.Errorf("second publish %+v, want every chunk reused", again)
	}
	objs, err := st.Client.List(ctx, prefix+"chunks/")
	if err != nil || len(objs) != len(m.Chunks) {
		t.Fatalf("List = %d objects, %v; want %d", len(objs), err, len(m.Chunks))
	}

	loaded, ok, err := blockimage.LoadManifest(ctx, st, prefix, img.meta.Source.Key)
	if err != nil || !ok || !reflect.DeepEqual(loaded, m) {
		t.Fatalf("LoadManifest = %v, %v", ok, err)
	}
	dst := newMemDevice(img.meta.DeviceSize)
	if _, err := blockimage.Fill(ctx, st, loaded, dst, blockimage.FillOptions{Prefix: prefix}); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, dst.data, img.dev.data)

	key := blockimage.ChunkKey(prefix, m.Chunks[2].Digest)
	if _, err := srv.S3().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &srv.Bucket, Key: &key}); err != nil {
		t.Fatal(err)
	}
	_, err = blockimage.Fill(ctx, st, loaded, newMemDevice(img.meta.DeviceSize), blockimage.FillOptions{Prefix: prefix})
	var ce *blockimage.ChunkError
	if !errors.As(err, &ce) || ce.Index != 2 || ce.Key != key || !errors.Is(err, blockimage.ErrChunkMissing) || !errors.Is(err, s3fetch.ErrNoSuchKey) {
		t.Fatalf("Fill with chunk 2 deleted = %v", err)
	}
}

// A corrupt chunk on a real server: the object is replaced by another
// chunk's (valid zstd, wrong content).
func TestVersityGWCorruptChunk(t *testing.T) {
	st, srv := versityStore(t)
	ctx := context.Background()
	img := newImage(16*MiB, 41, E{0, 8 * MiB})
	m, _ := publish(t, st, img, blockimage.PublishOptions{})
	key0, key1 := blockimage.ChunkKey(prefix, m.Chunks[0].Digest), blockimage.ChunkKey(prefix, m.Chunks[1].Digest)
	o, err := st.Client.Open(ctx, key0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := io.ReadAll(o)
	o.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv.PutObject(t, key1, other)
	_, err = blockimage.Fill(ctx, st, m, newMemDevice(img.meta.DeviceSize), blockimage.FillOptions{Prefix: prefix})
	var ce *blockimage.ChunkError
	if !errors.As(err, &ce) || ce.Index != 1 || !errors.Is(err, blockimage.ErrChunkCorrupt) {
		t.Fatalf("Fill = %v", err)
	}
}

// A sparse file round trip through a real server: the filled file has the
// source's bytes, and data only where the source had non-zero data, so
// holes (and mapped zeros) stay unallocated.
func TestVersityGWSparseRoundTrip(t *testing.T) {
	st, _ := versityStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	const size = 64 * MiB
	src := sparseFile(t, filepath.Join(dir, "src"), size, map[int64][]byte{
		0:             randomBytes(MiB, 51),
		10 * MiB:      randomBytes(12<<10, 52),
		20*MiB - 4096: randomBytes(5*MiB, 53),
		40 * MiB:      make([]byte, 8*MiB), // written zeros: allocated in src
		size - 64<<10: randomBytes(64<<10, 54),
	})
	extents, err := blockimage.FileExtents(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(extents) == 1 && extents[0] == (E{0, size}) {
		t.Skip("the temporary directory's filesystem reports no holes")
	}
	meta := blockimage.Meta{DeviceSize: size, FSType: "ext4", Source: blockimage.Source{Key: "images/sparse.tar", ETag: `"e"`}}
	m, stats, err := blockimage.Publish(ctx, st, src, extents, meta, blockimage.PublishOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if stats.ZeroChunks != 2 {
		t.Errorf("stats %+v, want the 8 MiB of written zeros as 2 zero chunks", stats)
	}
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := blockimage.Fill(ctx, st, m, dst, blockimage.FillOptions{Prefix: prefix}); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src.Name())
	got, _ := os.ReadFile(dst.Name())
	sameBytes(t, got, want)

	dataExt, err := blockimage.FileExtents(dst)
	if err != nil {
		t.Fatal(err)
	}
	var chunkExt []E
	for _, c := range m.Chunks {
		if n := len(chunkExt); n > 0 && chunkExt[n-1].End() == c.Offset {
			chunkExt[n-1].Length += c.Length
		} else {
			chunkExt = append(chunkExt, E{c.Offset, c.Length})
		}
	}
	if !reflect.DeepEqual(dataExt, chunkExt) {
		t.Errorf("dst data at %v, want exactly the chunks %v", dataExt, chunkExt)
	}
	for _, e := range dataExt {
		if e.Offset < 48*MiB && e.End() > 40*MiB {
			t.Errorf("the zeros at [40, 48) MiB were written: %v", e)
		}
	}
}

func sparseFile(t *testing.T, path string, size int64, data map[int64][]byte) *os.File {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range data {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return f
}
