package s3fetch_test

import (
	"context"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

// TestConfigKeysAndDurations: ImageKey prefixes the name; durations are
// seconds (fractions too, for sub-second test timeouts).
func TestConfigKeysAndDurations(t *testing.T) {
	c := s3fetch.DefaultConfig()
	c.Prefix, c.DownloadTimeout, c.PartTimeout = "img/", 120, 0.5
	if got := c.ImageKey("alpine.tar"); got != "img/alpine.tar" {
		t.Errorf("ImageKey = %q", got)
	}
	if c.DownloadTimeout.Duration() != 2*time.Minute || c.DownloadTimeout.String() != "120s" {
		t.Errorf("DownloadTimeout = %v / %v", c.DownloadTimeout.Duration(), c.DownloadTimeout)
	}
	if c.PartTimeout.Duration() != 500*time.Millisecond {
		t.Errorf("PartTimeout 0.5 = %v", c.PartTimeout.Duration())
	}
}

func TestDefaultConfig(t *testing.T) {
	c := s3fetch.DefaultConfig()
	if c.Bucket != "" || c.Region != "us-east-1" || c.Endpoint != "" || c.PathStyle ||
		c.Prefix != "images/" || c.LayerPrefix != "" || c.PartSize != 5<<20 || c.Concurrency != 4 ||
		c.DownloadTimeout != 300 || c.DownloadQueueSize != 3 || c.MaxRetries != 5 {
		t.Errorf("DefaultConfig() = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

// TestNewValidates: a Config built in code is checked by New with the
// rules (and words) config checks the file with (internal/s3check).
func TestNewValidates(t *testing.T) {
	c := s3fetch.DefaultConfig()
	c.PartSize = 0
	if _, err := s3fetch.New(context.Background(), c); err == nil || err.Error() != "s3: part_size must be positive, got 0B" {
		t.Errorf("New with part_size 0: %v", err)
	}
}
