package s3fetch_test

import (
	"context"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

func TestConfigTOML(t *testing.T) {
	var file struct {
		S3 s3fetch.Config `toml:"s3"`
	}
	file.S3 = s3fetch.DefaultConfig()
	doc := `
[s3]
bucket = "b"
region = "eu-west-1"
endpoint = "http://127.0.0.1:7070"
path_style = true
prefix = "img/"
layer_prefix = "layers/"
part_size = 8388608
concurrency = 8
download_timeout = 120
download_queue_size = 2
max_retries = 3
`
	if err := toml.Unmarshal([]byte(doc), &file); err != nil {
		t.Fatal(err)
	}
	c := file.S3
	want := s3fetch.DefaultConfig()
	want.Bucket, want.Region, want.Endpoint, want.PathStyle = "b", "eu-west-1", "http://127.0.0.1:7070", true
	want.Prefix, want.LayerPrefix, want.PartSize, want.Concurrency = "img/", "layers/", 8<<20, 8
	want.DownloadTimeout, want.DownloadQueueSize, want.MaxRetries = 120, 2, 3
	if c != want {
		t.Errorf("decoded %+v\nwant    %+v", c, want)
	}
	if c.DownloadTimeout.Duration() != 2*time.Minute || c.DownloadTimeout.String() != "120s" {
		t.Errorf("DownloadTimeout = %v / %v", c.DownloadTimeout.Duration(), c.DownloadTimeout)
	}
	if got := c.ImageKey("alpine.tar"); got != "img/alpine.tar" {
		t.Errorf("ImageKey = %q", got)
	}
	// Fractions work too, for sub-second test timeouts.
	if err := toml.Unmarshal([]byte("[s3]\npart_timeout = 0.5\n"), &file); err != nil || file.S3.PartTimeout != 0.5 {
		t.Errorf("part_timeout = 0.5 decoded as %v, %v", file.S3.PartTimeout, err)
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
