// Package ociarchive writes small OCI image archives (an image layout in a
// tar, what `ctr images import` reads) from layers described in Go, so the
// end-to-end tests and the demo need no registry and no network to get an
// image.
package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Media types and annotations of the OCI image spec.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	// AnnotationRefName is what `ctr images import` names the image after.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// Entry is one tar entry of a layer. Body is the content of regular files.
type Entry struct {
	Header tar.Header
	Body   []byte
}

// Layer is a filesystem changeset, in tar order.
type Layer []Entry

// epoch fixes every timestamp so an image's digests are reproducible.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Dir is a directory entry (name without the trailing slash).
func Dir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
}

// File is a regular file; mode may carry setuid/setgid/sticky (04000...).
func File(name string, mode int64, body string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, Body: []byte(body)}
}

// Bytes is a regular file with binary content.
func Bytes(name string, mode int64, body []byte) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, Body: body}
}

// Symlink is name -> target.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// Hardlink makes name a second link to the earlier entry target.
func Hardlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// Whiteout deletes dir/name of the layers below.
func Whiteout(dir, name string) Entry {
	return File(dir+"/.wh."+name, 0o644, "")
}

// Opaque hides everything the layers below hold in dir.
func Opaque(dir string) Entry {
	return File(dir+"/.wh..wh..opq", 0o644, "")
}

// Image is what Write puts in the archive.
type Image struct {
	// Ref names the image, e.g. "docker.io/flyio/e2e:1".
	Ref    string
	Layers []Layer
	// Cmd and Env go into the image config.
	Cmd []string
	Env []string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	return blob{digest: fmt.Sprintf("sha256:%x", sha256.Sum256(data)), data: data}
}

// layerBlob returns the gzip-compressed layer and the digest of its
// uncompressed tar (the diff id the image config lists).
func layerBlob(l Layer) (blob, string, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range l {
		h := e.Header
		h.Format = tar.FormatPAX
		h.ModTime = epoch
		if err := tw.WriteHeader(&h); err != nil {
			return blob{}, "", fmt.Errorf("layer entry %q: %w", h.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			return blob{}, "", fmt.Errorf("layer entry %q: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return blob{}, "", err
	}
	diffID := fmt.Sprintf("sha256:%x", sha256.Sum256(raw.Bytes()))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return blob{}, "", err
	}
	if err := zw.Close(); err != nil {
		return blob{}, "", err
	}
	return newBlob(gz.Bytes()), diffID, nil
}

// Write writes img as an OCI image layout in a tar stream: oci-layout,
// index.json (whose manifest carries the ref-name annotation) and
// blobs/sha256/*.
func Write(w io.Writer, img Image) error {
	var blobs []blob
	var layers []descriptor
	var diffIDs []string
	for i, l := range img.Layers {
		b, diffID, err := layerBlob(l)
		if err != nil {
			return fmt.Errorf("image %s layer %d: %w", img.Ref, i, err)
		}
		blobs = append(blobs, b)
		layers = append(layers, descriptor{MediaType: mediaTypeLayer, Digest: b.digest, Size: int64(len(b.data))})
		diffIDs = append(diffIDs, diffID)
	}
	env := img.Env
	if env == nil {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	config, err := json.Marshal(map[string]any{
		"created":      epoch,
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Env": env, "Cmd": img.Cmd},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return err
	}
	cb := newBlob(config)
	blobs = append(blobs, cb)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeManifest,
		"config":        descriptor{MediaType: mediaTypeConfig, Digest: cb.digest, Size: int64(len(config))},
		"layers":        layers,
	})
	if err != nil {
		return err
	}
	mb := newBlob(manifest)
	blobs = append(blobs, mb)
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeIndex,
		"manifests": []descriptor{{
			MediaType: mediaTypeManifest, Digest: mb.digest, Size: int64(len(manifest)),
			Annotations: map[string]string{AnnotationRefName: img.Ref},
			Platform:    &platform{Architecture: "amd64", OS: "linux"},
		}},
	})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := add("blobs/sha256/"+b.digest[len("sha256:"):], b.data); err != nil {
			return err
		}
	}
	return tw.Close()
}
