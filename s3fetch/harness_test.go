package s3fetch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// harness is an S3 backend (the in-process fake or a real versitygw) with
// the fault proxy in front of it.
type harness struct {
	name   string
	bucket string
	proxy  *s3test.Proxy
	put    func(t testing.TB, key string, data []byte) string
	opts   []s3fetch.Option
}

func fakeHarness(t testing.TB) *harness {
	f := s3test.NewFake(t, "test-bucket")
	f.ListPageSize = 3 // make List follow continuation tokens
	return &harness{
		name:   "fake",
		bucket: f.Bucket,
		proxy:  s3test.NewProxy(t, f.URL),
		put:    func(_ testing.TB, key string, data []byte) string { return f.Put(key, data) },
		opts:   []s3fetch.Option{s3fetch.WithCredentials(staticCreds{})},
	}
}

func versityHarness(t testing.TB) *harness {
	s := s3test.Start(t)
	return &harness{
		name:   "versitygw",
		bucket: s.Bucket,
		proxy:  s3test.NewProxy(t, s.Endpoint),
		put:    s.PutObject,
		opts:   []s3fetch.Option{s3fetch.WithCredentials(s.Credentials())},
	}
}

// config points at the proxy with small parts and quick retries.
func (h *harness) config() s3fetch.Config {
	return s3test.ConfigFor(h.proxy.URL, "us-east-1", h.bucket)
}

func (h *harness) client(t testing.TB, cfg s3fetch.Config) *s3fetch.Client {
	t.Helper()
	c, err := s3fetch.New(context.Background(), cfg, h.opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readAll opens key and reads it through, returning the bytes and the
// object's stats.
func readAll(t testing.TB, c *s3fetch.Client, key string) ([]byte, s3fetch.ObjectStats, error) {
	t.Helper()
	o, err := c.Open(context.Background(), key)
	if err != nil {
		return nil, s3fetch.ObjectStats{}, err
	}
	defer o.Close()
	var buf bytes.Buffer
	_, err = io.Copy(&buf, o)
	return buf.Bytes(), o.Stats(), err
}

func sameBytes(t testing.TB, got, want []byte) {
	t.Helper()
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("content mismatch: got %d bytes sha256 %x, want %d bytes sha256 %x", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}
