package importer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/metrics"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

type fakeCreds struct{}

func (fakeCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "fake", SecretAccessKey: "fake", Source: "test"}, nil
}

// oneEntryTar is a tar holding one file of size random bytes: smaller
// than the extractor's Progress interval, so only the read counter can
// show it streaming.
func oneEntryTar(t *testing.T, size int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	data := make([]byte, size)
	rand.Read(data)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	return b.Bytes()
}

// TestStreamShowsBytesReadDuringAStall streams one large entry whose
// download stalls after its first MiB and checks that the live run (what
// status --run-id shows) and the fetched-bytes metric count that MiB
// while the stall lasts, rather than 0 until the end.
func TestStreamShowsBytesReadDuringAStall(t *testing.T) {
	const key, stallAt = "images/big.tar", 1 << 20
	fake := s3test.NewFake(t, "test-bucket")
	etag := fake.Put(key, oneEntryTar(t, 3<<20))
	proxy := s3test.NewProxy(t, fake.URL)
	cfg := s3test.ConfigFor(proxy.URL, "us-east-1", fake.Bucket)
	cfg.PartTimeout = 60 // the stall outlasts the test: no retries
	proxy.Inject(&s3test.Rule{Match: s3test.MatchRangeFrom(key, stallAt), Fault: s3test.Fault{StallHeaders: time.Minute}})
	s3c, err := s3fetch.New(context.Background(), cfg, s3fetch.WithCredentials(fakeCreds{}))
	if err != nil {
		t.Fatal(err)
	}

	im, _, _ := testImporter(t)
	im.s3 = s3c
	m := metrics.New()
	im.cfg.Fills = m.Fills(metrics.SourceImage)
	r := metadata.Run{ID: "stall", Bucket: fake.Bucket, Key: key, ETag: etag, State: metadata.RunDownloading}
	if err := im.store.Update(func(tx *metadata.Tx) error { return tx.PutRun(&r) }); err != nil {
		t.Fatal(err)
	}
	rs := &runState{run: r, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := im.stream(ctx, t.TempDir(), rs)
		errc <- err
	}()

	waitFor(t, "the bytes before the stall in the live run", func() bool { return rs.snapshot().CompressedBytes == stallAt })
	if got := rs.snapshot(); got.State != metadata.RunExtracting || got.Entries > 1 {
		t.Errorf("live run while stalled: %s, %d entries", got.State, got.Entries)
	}
	waitFor(t, "the fetched-bytes metric", func() bool { return fetchedBytes(t, m) == stallAt })

	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("stream after cancel: %v, want context.Canceled", err)
	}
	// The extractor's last Progress and Done count the same bytes: no
	// double counting, and the live figure did not move back.
	if got := fetchedBytes(t, m); got != stallAt {
		t.Errorf("fetched metric after the stream ended: %d, want %d", got, stallAt)
	}
	if got := rs.snapshot().CompressedBytes; got != stallAt {
		t.Errorf("live CompressedBytes after the stream ended: %d, want %d", got, stallAt)
	}
}

func fetchedBytes(t *testing.T, m *metrics.Metrics) int64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flyio_s3_fetched_bytes_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == metrics.SourceImage {
					return int64(mt.GetCounter().GetValue())
				}
			}
		}
	}
	return -1
}
