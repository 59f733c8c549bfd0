package importer

import (
	"bytes"
	"context"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// TestChooseBlock: a run fills from a block image only when one exists
// for the tarball's current ETag; --from-block turns each other case
// into an error rather than an extraction.
func TestChooseBlock(t *testing.T) {
	const key, prefix = "images/a.tar", "blocks/"
	fake := s3test.NewFake(t, "test-bucket")
	etag := fake.Put(key, []byte("a tarball"))
	s3c, err := s3fetch.New(context.Background(), s3test.ConfigFor(fake.URL, "us-east-1", fake.Bucket), s3fetch.WithCredentials(fakeCreds{}))
	if err != nil {
		t.Fatal(err)
	}
	im, _, _ := testImporter(t)
	im.s3 = s3c
	ctx := context.Background()

	if got, err := im.chooseBlock(ctx, key, etag, true); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("--from-block without block_prefix: %q, %v", got, err)
	}
	im.cfg.BlockPrefix = prefix
	if got, err := im.chooseBlock(ctx, key, etag, false); err != nil || got != "" {
		t.Fatalf("no manifest: %q, %v; want the tarball", got, err)
	}
	if _, err := im.chooseBlock(ctx, key, etag, true); !errdefs.IsNotFound(err) {
		t.Fatalf("--from-block, no manifest: %v, want NotFound", err)
	}

	publish := func(etag string) {
		t.Helper()
		cfg, _ := blockConfigOf(&metadata.Run{DiffID: "sha256:" + hex64('a'), Digest: "sha256:" + hex64('b')})
		dev := bytes.Repeat([]byte{1}, 1<<20)
		meta := blockimage.Meta{DeviceSize: 1 << 20, FSType: "ext4", Source: blockimage.Source{Key: key, ETag: etag}, Config: cfg}
		if _, _, err := blockimage.Publish(ctx, im.blockStore(), bytes.NewReader(dev), []blockimage.Extent{{Offset: 0, Length: 1 << 20}}, meta, blockimage.PublishOptions{Prefix: prefix}); err != nil {
			t.Fatal(err)
		}
	}
	publish(`"stale"`)
	if got, err := im.chooseBlock(ctx, key, etag, false); err != nil || got != "" {
		t.Fatalf("stale manifest: %q, %v; want the tarball", got, err)
	}
	if _, err := im.chooseBlock(ctx, key, etag, true); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("--from-block, stale manifest: %v, want FailedPrecondition", err)
	}
	publish(etag)
	want := blockimage.ManifestKey(prefix, key)
	for _, required := range []bool{false, true} {
		if got, err := im.chooseBlock(ctx, key, etag, required); err != nil || got != want {
			t.Fatalf("current manifest (required %v): %q, %v; want %q", required, got, err, want)
		}
	}
	r := metadata.Run{Key: key, ETag: etag, Block: want}
	m, res, err := im.loadBlock(ctx, r)
	if err != nil || len(m.Chunks) != 1 || res.DiffID != "sha256:"+hex64('a') {
		t.Fatalf("loadBlock: %+v %+v %v", m, res, err)
	}

	fake.Put(want, []byte("{not json"))
	if got, err := im.chooseBlock(ctx, key, etag, false); err != nil || got != "" {
		t.Fatalf("broken manifest: %q, %v; want the tarball", got, err)
	}
	if _, err := im.chooseBlock(ctx, key, etag, true); err == nil {
		t.Fatal("--from-block with a broken manifest succeeded")
	}
}
