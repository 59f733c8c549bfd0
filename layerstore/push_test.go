package layerstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
	godigest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/superfly/flyio-image-manager/layerstore"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// testImage writes an index -> manifest -> config + layers image into a
// local content store. The layers' "compressed" and "uncompressed" bytes
// are arbitrary: the store never decompresses.
type testImage struct {
	cs      content.Store
	target  ocispec.Descriptor
	layers  []ocispec.Descriptor
	diffIDs []godigest.Digest
	blobs   map[godigest.Digest][]byte
}

func newTestImage(t *testing.T, layers ...[]byte) *testImage {
	t.Helper()
	ctx := context.Background()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img := &testImage{cs: cs, blobs: map[godigest.Digest][]byte{}}
	put := func(mt string, data []byte) ocispec.Descriptor {
		desc := ocispec.Descriptor{MediaType: mt, Digest: godigest.FromBytes(data), Size: int64(len(data))}
		if err := content.WriteBlob(ctx, cs, desc.Digest.String(), bytes.NewReader(data), desc); err != nil {
			t.Fatal(err)
		}
		img.blobs[desc.Digest] = data
		return desc
	}
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i, l := range layers {
		img.layers = append(img.layers, put(ocispec.MediaTypeImageLayerGzip, l))
		img.diffIDs = append(img.diffIDs, godigest.FromBytes(append([]byte("uncompressed "), byte(i))))
	}
	cfg := put(ocispec.MediaTypeImageConfig, marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.diffIDs},
	}))
	mf := put(ocispec.MediaTypeImageManifest, marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cfg, Layers: img.layers,
	}))
	mf.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	other := put(ocispec.MediaTypeImageManifest, marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg,
	}))
	other.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	img.target = put(ocispec.MediaTypeImageIndex, marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{other, mf},
	}))
	return img
}

func pushAll(t *testing.T, s *layerstore.Store, img *testImage) []layerstore.Pushed {
	t.Helper()
	var got []layerstore.Pushed
	err := s.PushImage(context.Background(), img.cs, img.target, platforms.Only(platforms.MustParse("linux/amd64")), func(p layerstore.Pushed) {
		got = append(got, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(img.layers) {
		t.Fatalf("pushed %d layers, image has %d", len(got), len(img.layers))
	}
	return got
}

// checkRoundTrip opens every layer the way a ctr pull's Prepare would
// (diff id label only) and compares with the content store.
func checkRoundTrip(t *testing.T, s *layerstore.Store, img *testImage) {
	t.Helper()
	for i, l := range img.layers {
		blob, diffID, ok, err := s.Open(context.Background(), map[string]string{
			snapshots.LabelSnapshotRef: "sha256:chain", snapshots.LabelSnapshotDiffID: img.diffIDs[i].String(),
		})
		if err != nil || !ok {
			t.Fatalf("layer %d: Open = %v, %v", i, ok, err)
		}
		data, err := io.ReadAll(blob)
		blob.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, img.blobs[l.Digest]) || diffID != img.diffIDs[i].String() {
			t.Errorf("layer %d: got %d bytes for diff id %s", i, len(data), diffID)
		}
	}
}

func TestPushImage(t *testing.T) {
	s := newFakeStore(t)
	img := newTestImage(t, []byte("layer zero"), []byte("layer one"), []byte("layer zero")[:5])
	for i, p := range pushAll(t, s.Store, img) {
		if !p.Uploaded || p.PointerOK || p.Layer.Digest != img.layers[i].Digest || p.DiffID != img.diffIDs[i].String() {
			t.Errorf("first push, layer %d: %+v", i, p)
		}
		if p.BlobKey != prefix+"blobs/sha256/"+p.Layer.Digest.Encoded() {
			t.Errorf("layer %d: blob key %q", i, p.BlobKey)
		}
		ptr, ok := s.fake.Get(prefix + "diffids/sha256/" + img.diffIDs[i].Encoded())
		var got layerstore.Pointer
		if !ok || json.Unmarshal(ptr, &got) != nil || got != (layerstore.Pointer{Digest: p.Layer.Digest, MediaType: ocispec.MediaTypeImageLayerGzip, Size: p.Layer.Size}) {
			t.Errorf("layer %d: pointer %s", i, ptr)
		}
	}
	checkRoundTrip(t, s.Store, img)

	// Pushing again uploads nothing.
	s.proxy.ResetLog()
	for i, p := range pushAll(t, s.Store, img) {
		if p.Uploaded || !p.PointerOK {
			t.Errorf("second push, layer %d: %+v", i, p)
		}
	}
	for _, r := range s.proxy.Requests() {
		if r.Method == "PUT" || r.Method == "POST" {
			t.Errorf("second push wrote %s %s", r.Method, r.Path)
		}
	}

	// A truncated blob (an interrupted upload by hand, say) is replaced.
	key := prefix + "blobs/sha256/" + img.layers[1].Digest.Encoded()
	s.fake.Put(key, []byte("layer"))
	if got := pushAll(t, s.Store, img); !got[1].Uploaded || got[0].Uploaded {
		t.Errorf("after truncating layer 1: %+v", got)
	}
	if data, _ := s.fake.Get(key); string(data) != "layer one" {
		t.Errorf("layer 1 is %q after the repair", data)
	}
}

// A layer the content store lacks (pulled metadata only) fails naming the
// layer and the key.
func TestPushImageMissingBlob(t *testing.T) {
	s := newFakeStore(t)
	img := newTestImage(t, []byte("layer zero"))
	if err := img.cs.Delete(context.Background(), img.layers[0].Digest); err != nil {
		t.Fatal(err)
	}
	err := s.PushImage(context.Background(), img.cs, img.target, platforms.Only(platforms.MustParse("linux/amd64")), nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(img.layers[0].Digest.String())) || !bytes.Contains([]byte(err.Error()), []byte("blobs/sha256/"+img.layers[0].Digest.Encoded())) {
		t.Fatalf("err = %v; want one naming the layer and its key", err)
	}
}

// Real layers are larger than a part: PushImage must do a multipart upload
// that a real S3 server accepts, and Open must read it back.
func TestVersityGWPushImageMultipart(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	cfg.LayerPrefix = "layers/"
	cfg.PartSize = s3fetch.MinPartSize
	c := srv.Client(t, cfg)
	s := layerstore.New(c, cfg)
	big := make([]byte, 2*s3fetch.MinPartSize+777)
	rand.New(rand.NewSource(1)).Read(big)
	img := newTestImage(t, big, []byte("small"))
	got := pushAll(t, s, img)
	if !got[0].Uploaded || !got[1].Uploaded {
		t.Errorf("push: %+v", got)
	}
	info, err := c.Stat(context.Background(), got[0].BlobKey)
	if err != nil || info.Size != int64(len(big)) {
		t.Fatalf("Stat(%s) = %+v, %v", got[0].BlobKey, info, err)
	}
	checkRoundTrip(t, s, img)
	if again := pushAll(t, s, img); again[0].Uploaded || again[1].Uploaded {
		t.Errorf("second push uploaded: %+v", again)
	}
}
