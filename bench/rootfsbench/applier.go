package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/plugins/content/local"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerd's layer applier is the diff service's fsApplier
// (core/diff/apply): what containerd runs for every layer it unpacks into a
// snapshot. Around pkg/archive.Apply it reads the blob from the content
// store and computes the layer's diff ID (the uncompressed stream's
// sha256), as our extractor does; the bare pkg/archive.Apply skips that.
// The blob is put into a content store of its own once, untimed; each run
// applies it to a bind mount of its directory, as containerd applies a
// layer to a snapshot's mounts.

// Environment of the "containerd" child: where the content store is and
// the blob's digest.
const (
	envContentStore = "ROOTFSBENCH_CONTENT_STORE"
	envBlobDigest   = "ROOTFSBENCH_BLOB_DIGEST"
)

// ingest writes the archive into a content store under work and returns
// the environment the "containerd" children need.
func ingest(ctx context.Context, archivePath, work string) ([]string, error) {
	root := filepath.Join(work, "content")
	cs, err := local.NewStore(root)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(archivePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dg, err := digest.Canonical.FromReader(f)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return nil, err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: dg, Size: st.Size()}
	if err := content.WriteBlob(ctx, cs, "rootfsbench", f, desc); err != nil {
		return nil, fmt.Errorf("content store %s: %w", root, err)
	}
	return []string{envContentStore + "=" + root, envBlobDigest + "=" + dg.String()}, nil
}

// applyLayer is the "containerd" child's extraction: fsApplier.Apply of
// the stored blob onto a bind mount of dir.
func applyLayer(ctx context.Context, dir string) error {
	root, dg := os.Getenv(envContentStore), os.Getenv(envBlobDigest)
	if root == "" || dg == "" {
		return fmt.Errorf("%s and %s must be set", envContentStore, envBlobDigest)
	}
	cs, err := local.NewStore(root)
	if err != nil {
		return err
	}
	info, err := cs.Info(ctx, digest.Digest(dg))
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: info.Digest, Size: info.Size}
	mounts := []mount.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}}
	_, err = apply.NewFileSystemApplier(cs).Apply(ctx, desc, mounts)
	return err
}
