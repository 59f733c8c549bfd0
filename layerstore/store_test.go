package layerstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	godigest "github.com/opencontainers/go-digest"

	"github.com/superfly/flyio-image-manager/layerstore"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

const prefix = "layers/"

// fakeStore is a Store on an in-process fake behind a recording proxy, so
// tests can assert which keys were (or were not) requested.
type fakeStore struct {
	*layerstore.Store
	fake  *s3test.Fake
	proxy *s3test.Proxy
}

func newFakeStore(t *testing.T) *fakeStore {
	t.Helper()
	f := s3test.NewFake(t, "bucket")
	p := s3test.NewProxy(t, f.URL)
	cfg := s3test.ConfigFor(p.URL, "us-east-1", "bucket")
	cfg.LayerPrefix = prefix
	c, err := s3fetch.New(context.Background(), cfg, s3fetch.WithCredentials(credentials.NewStaticCredentialsProvider("a", "b", "")))
	if err != nil {
		t.Fatal(err)
	}
	return &fakeStore{Store: layerstore.New(c, cfg), fake: f, proxy: p}
}

func sha(data string) string {
	sum := sha256.Sum256([]byte(data))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }

func readOpen(t *testing.T, s *fakeStore, labels map[string]string) (data, diffID string, ok bool) {
	t.Helper()
	blob, diffID, ok, err := s.Open(context.Background(), labels)
	if err != nil {
		t.Fatalf("Open(%v): %v", labels, err)
	}
	if !ok {
		return "", diffID, false
	}
	defer blob.Close()
	b, err := io.ReadAll(blob)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), diffID, true
}

func TestKeys(t *testing.T) {
	s := newFakeStore(t)
	d := sha("x")
	if k, err := s.BlobKey(d); err != nil || k != prefix+"blobs/sha256/"+hexOf(d) {
		t.Errorf("BlobKey = %q, %v", k, err)
	}
	if k, err := s.PointerKey(d); err != nil || k != prefix+"diffids/sha256/"+hexOf(d) {
		t.Errorf("PointerKey = %q, %v", k, err)
	}
}

// Labels come from whoever called Prepare: nothing but a canonical sha256
// digest may become part of a key, and a refused one must not cause any
// request at all.
func TestInvalidDigestsNeverReachS3(t *testing.T) {
	good := sha("layer")
	bad := []string{
		"",
		"sha256:",
		"sha256:" + strings.Repeat("a", 63),
		"sha256:" + strings.Repeat("a", 65),
		"sha256:" + strings.ToUpper(hexOf(good)),
		"SHA256:" + hexOf(good),
		"sha512:" + strings.Repeat("a", 128),
		"sha256:../../../../images/secret" + strings.Repeat("a", 32),
		"sha256:" + strings.Repeat("a", 62) + "/x",
		"sha256:" + strings.Repeat("a", 63) + "\n",
		hexOf(good),
		" " + good,
	}
	s := newFakeStore(t)
	for _, d := range bad {
		for _, labels := range []map[string]string{
			{snapshots.LabelSnapshotDiffID: d},
			{snapshots.LabelSnapshotDiffID: good, layerstore.LabelLayerDigest: d},
		} {
			_, _, ok, err := s.Open(context.Background(), labels)
			if !errors.Is(err, layerstore.ErrInvalidDigest) || !errors.Is(err, errdefs.ErrInvalidArgument) || ok {
				t.Errorf("Open(%q) = ok %v, %v; want ErrInvalidDigest", labels, ok, err)
			}
		}
		if _, err := s.BlobKey(d); !errors.Is(err, layerstore.ErrInvalidDigest) {
			t.Errorf("BlobKey(%q) = %v", d, err)
		}
		if _, err := s.PointerKey(d); !errors.Is(err, layerstore.ErrInvalidDigest) {
			t.Errorf("PointerKey(%q) = %v", d, err)
		}
	}
	if reqs := s.proxy.Requests(); len(reqs) != 0 {
		t.Errorf("invalid digests caused requests: %+v", reqs)
	}
}

func TestOpenByLayerDigest(t *testing.T) {
	s := newFakeStore(t)
	blob, diffID := "compressed layer", sha("uncompressed layer")
	s.fake.Put(prefix+"blobs/sha256/"+hexOf(sha(blob)), []byte(blob))
	got, gotDiffID, ok := readOpen(t, s, map[string]string{
		snapshots.LabelSnapshotRef:    sha("chain"),
		snapshots.LabelSnapshotDiffID: diffID,
		layerstore.LabelLayerDigest:   sha(blob),
	})
	if !ok || got != blob || gotDiffID != diffID {
		t.Fatalf("Open = %q, %q, %v", got, gotDiffID, ok)
	}
	for _, r := range s.proxy.Requests() {
		if strings.Contains(r.Path, "/diffids/") {
			t.Errorf("looked up the pointer although the blob digest was known: %+v", r)
		}
	}
}

func TestOpenByDiffID(t *testing.T) {
	s := newFakeStore(t)
	blob, diffID := "compressed layer", sha("uncompressed layer")
	s.fake.Put(prefix+"blobs/sha256/"+hexOf(sha(blob)), []byte(blob))
	if err := s.PutPointer(context.Background(), diffID, layerstore.Pointer{Digest: digestOf(blob), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Size: int64(len(blob))}); err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		"diff id only": {snapshots.LabelSnapshotDiffID: diffID},
		// The blob was pushed under another compression: the pointer
		// still finds the layer.
		"unknown layer digest": {snapshots.LabelSnapshotDiffID: diffID, layerstore.LabelLayerDigest: sha("other compression")},
	} {
		got, gotDiffID, ok := readOpen(t, s, labels)
		if !ok || got != blob || gotDiffID != diffID {
			t.Errorf("%s: Open = %q, %q, %v", name, got, gotDiffID, ok)
		}
	}
}

func TestOpenMissing(t *testing.T) {
	s := newFakeStore(t)
	diffID := sha("uncompressed")
	for name, labels := range map[string]map[string]string{
		"nothing":          {snapshots.LabelSnapshotDiffID: diffID},
		"unknown digest":   {snapshots.LabelSnapshotDiffID: diffID, layerstore.LabelLayerDigest: sha("blob")},
		"no diff id label": {snapshots.LabelSnapshotRef: sha("chain"), layerstore.LabelLayerDigest: sha("blob")},
		"no labels":        nil,
	} {
		blob, _, ok, err := s.Open(context.Background(), labels)
		if err != nil || ok || blob != nil {
			t.Errorf("%s: Open = %v, %v, %v; want not found", name, blob, ok, err)
		}
	}
	// A pointer whose blob is gone (deleted by hand) is not found either.
	if err := s.PutPointer(context.Background(), diffID, layerstore.Pointer{Digest: digestOf("gone"), Size: 4}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := s.Open(context.Background(), map[string]string{snapshots.LabelSnapshotDiffID: diffID}); err != nil || ok {
		t.Errorf("pointer to a missing blob: ok %v, %v", ok, err)
	}
}

func TestOpenBrokenPointer(t *testing.T) {
	diffID := sha("uncompressed")
	ptrKey := prefix + "diffids/sha256/" + hexOf(diffID)
	for name, tc := range map[string]struct {
		pointer string
		want    error
	}{
		"not json":      {`{"digest":`, errdefs.ErrDataLoss},
		"bad digest":    {`{"digest":"sha256:../x","size":1}`, layerstore.ErrInvalidDigest},
		"negative size": {`{"digest":"` + sha("b") + `","size":-1}`, errdefs.ErrDataLoss},
		"size mismatch": {`{"digest":"` + sha("blob") + `","size":99}`, errdefs.ErrDataLoss},
		"huge":          {`{"digest":"` + sha("blob") + `","size":4,"pad":"` + strings.Repeat("x", 70<<10) + `"}`, errdefs.ErrDataLoss},
	} {
		t.Run(name, func(t *testing.T) {
			s := newFakeStore(t)
			s.fake.Put(prefix+"blobs/sha256/"+hexOf(sha("blob")), []byte("blob"))
			s.fake.Put(ptrKey, []byte(tc.pointer))
			_, _, ok, err := s.Open(context.Background(), map[string]string{snapshots.LabelSnapshotDiffID: diffID})
			if ok || !errors.Is(err, tc.want) {
				t.Fatalf("Open = ok %v, %v; want %v", ok, err, tc.want)
			}
			if !strings.Contains(err.Error(), ptrKey) && !strings.Contains(err.Error(), "blobs/sha256/") {
				t.Errorf("error does not name the object: %v", err)
			}
		})
	}
}

// Access denied and other failures are errors, not "not found": the
// snapshotter logs them before containerd falls back to the registry.
func TestOpenDenied(t *testing.T) {
	s := newFakeStore(t)
	diffID := sha("uncompressed")
	s.fake.Deny(prefix + "diffids/sha256/" + hexOf(diffID))
	_, _, ok, err := s.Open(context.Background(), map[string]string{snapshots.LabelSnapshotDiffID: diffID})
	if ok || !errors.Is(err, s3fetch.ErrAccessDenied) {
		t.Fatalf("Open = ok %v, %v; want access denied", ok, err)
	}
}

func digestOf(data string) godigest.Digest { return godigest.Digest(sha(data)) }
