package s3check

import (
	"strconv"
	"testing"
)

// size and seconds stand for internal/units' Size and Seconds, which
// print the same way.
type size int64

func (s size) String() string { return strconv.FormatInt(int64(s), 10) + "B" }

type seconds float64

func (s seconds) String() string { return strconv.FormatFloat(float64(s), 'f', -1, 64) + "s" }

type settings = Settings[size, seconds]

func valid() settings {
	return settings{Region: "us-east-1", PartSize: 5 << 20, Concurrency: 4, DownloadTimeout: 300, PartTimeout: 30,
		DownloadQueueSize: 3, MaxRetries: 5, RetryBaseDelay: 0.2, RetryMaxDelay: 5}
}

// TestValidate pins each rule's message: operators read them from the
// daemon's start and from s3fetch.New, the same text from both.
func TestValidate(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid settings: %v", err)
	}
	for _, c := range []struct {
		change func(*settings)
		want   string
	}{
		{func(s *settings) { s.LayerPrefix = "layers/" }, `s3: layer_prefix "layers/" turns the layer store on, which needs a bucket: set [s3] bucket`},
		{func(s *settings) { s.Region = "" }, "s3: region must be set"},
		{func(s *settings) { s.PartSize = 0 }, "s3: part_size must be positive, got 0B"},
		{func(s *settings) { s.Concurrency = 0 }, "s3: concurrency must be positive, got 0"},
		{func(s *settings) { s.DownloadTimeout = 0 }, "s3: download_timeout must be positive, got 0s"},
		{func(s *settings) { s.PartTimeout = -1 }, "s3: part_timeout must be positive, got -1s"},
		{func(s *settings) { s.DownloadQueueSize = 0 }, "s3: download_queue_size must be positive, got 0"},
		{func(s *settings) { s.MaxRetries = -1 }, "s3: max_retries must not be negative, got -1"},
		{func(s *settings) { s.RetryMaxDelay = -1 }, "s3: retry delays must not be negative"},
	} {
		s := valid()
		c.change(&s)
		if err := s.Validate(); err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
	// Without a layer store, no bucket is fine: the daemon runs without S3.
	s := valid()
	s.Bucket = ""
	if err := s.Validate(); err != nil {
		t.Errorf("no bucket, no layer store: %v", err)
	}
}
