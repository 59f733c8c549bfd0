package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Labels process-image puts on the images it registers.
const (
	LabelImageID = "flyio.io/image-id"
	LabelS3Key   = "flyio.io/s3-key"
	LabelS3ETag  = "flyio.io/s3-etag"
	LabelRunID   = "flyio.io/run-id"
)

// registerImage writes an OCI config and manifest for the one-layer image
// into containerd's content store and points an image record at them. The
// config carries the gc label that ties the committed base snapshot to the
// image, so containerd's GC keeps the base exactly as long as the image.
// The layer blob itself is not stored: the base is already unpacked, and
// S3 keeps the tarball.
func registerImage(ctx context.Context, cli *client.Client, snapshotter string, r metadata.Run, res extract.Result) error {
	created := time.Now().UTC()
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config: ocispec.ImageConfig{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"/bin/sh"},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.Digest(res.DiffID)}},
	}
	cfgDesc, err := writeJSON(ctx, cli.ContentStore(), ocispec.MediaTypeImageConfig, cfg, map[string]string{
		"containerd.io/gc.ref.snapshot." + snapshotter: res.DiffID,
	})
	if err != nil {
		return fmt.Errorf("writing image config: %w", err)
	}
	layer := ocispec.Descriptor{MediaType: layerMediaType(res.Compression), Digest: digest.Digest(res.Digest), Size: res.CompressedBytes}
	manifest := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    []ocispec.Descriptor{layer},
		Annotations: map[string]string{
			ocispec.AnnotationRefName: r.Ref,
			LabelS3Key:                r.Key,
		},
	}
	manifest.SchemaVersion = 2
	mfDesc, err := writeJSON(ctx, cli.ContentStore(), ocispec.MediaTypeImageManifest, manifest, map[string]string{
		"containerd.io/gc.ref.content.config": cfgDesc.Digest.String(),
	})
	if err != nil {
		return fmt.Errorf("writing image manifest: %w", err)
	}
	img := images.Image{
		Name:   r.Ref,
		Target: mfDesc,
		Labels: map[string]string{LabelImageID: r.ImageID, LabelS3Key: r.Key, LabelS3ETag: r.ETag, LabelRunID: r.ID},
	}
	is := cli.ImageService()
	if _, err := is.Create(ctx, img); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("creating image %s: %w", r.Ref, err)
		}
		if _, err := is.Update(ctx, img, "target", "labels"); err != nil {
			return fmt.Errorf("updating image %s: %w", r.Ref, err)
		}
	}
	return nil
}

func layerMediaType(compression string) string {
	switch compression {
	case "gzip":
		return ocispec.MediaTypeImageLayerGzip
	case "zstd":
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayer
}

func writeJSON(ctx context.Context, cs content.Store, mediaType string, v any, labels map[string]string) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(ctx, cs, desc.Digest.String(), bytes.NewReader(b), desc, content.WithLabels(labels)); err != nil {
		return desc, err
	}
	// WriteBlob keeps an existing blob as it is; the gc labels must be on
	// it whoever wrote it first.
	paths := make([]string, 0, len(labels))
	for k := range labels {
		paths = append(paths, "labels."+k)
	}
	if _, err := cs.Update(ctx, content.Info{Digest: desc.Digest, Labels: labels}, paths...); err != nil {
		return desc, err
	}
	return desc, nil
}
