package s3fetch_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// Layers are pushed with multipart uploads; only a real server does those.
func TestVersityGWMultipartPut(t *testing.T) {
	s := s3test.Start(t)
	cfg := s.Config()
	cfg.PartSize = s3fetch.MinPartSize
	cfg.Concurrency = 2
	c := s.Client(t, cfg)
	ctx := context.Background()
	data := randomBytes(3*s3fetch.MinPartSize+12345, 99)
	const key = "layers/big.tar.zst"
	info, err := c.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(data)) || st.ETag != info.ETag {
		t.Errorf("Stat = %+v, Put returned %+v", st, info)
	}
	// A multipart ETag ("...-4") still pins the ranged GETs.
	got, _, err := readAll(t, c, key)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, got, data)
}
