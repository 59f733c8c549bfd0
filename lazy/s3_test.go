package lazy_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/lazy"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// An origin on a real versitygw gateway: reads on demand give the
// image's bytes, and the prefetch completes and switches.
func TestVersityGWOrigin(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	cfg.PartSize = blockimage.MaxChunkSize
	cfg.DownloadQueueSize = 8
	st := blockimage.NewS3Store(srv.Client(t, cfg))
	img := publishImage(t, st, 24*MiB, 11, ext(0, 9*MiB), ext(16*MiB, 5*MiB))
	a := newFakeAttach()
	dir := t.TempDir()
	m := openManager(t, a.config(dir, st))
	if err := m.Create(context.Background(), "base-s3", img.man); err != nil {
		t.Fatal(err)
	}
	p, _ := m.DevicePath("base-s3")
	r := a.servedDev(p).r
	buf := make([]byte, 2*MiB)
	for _, off := range []int64{3 * MiB, 8 * MiB, 15 * MiB, 20 * MiB} {
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, buf, img.data[off:off+int64(len(buf))])
	}
	<-a.switched
	waitFor(t, "local", func() bool { return statusOf(t, m, "base-s3").State == lazy.StateLocal })
	got, err := os.ReadFile(filepath.Join(dir, "base-s3", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, got, img.data)
}
