package config

import (
	"fmt"
	"os"
	"strconv"

	"github.com/superfly/flyio-image-manager/internal/defaults"
	"github.com/superfly/flyio-image-manager/internal/s3check"
	"github.com/superfly/flyio-image-manager/internal/units"
)

// S3 is the [s3] section: where image tarballs and layers are stored, and
// how downloads behave. service maps it onto s3fetch.Config; credentials
// are not configured here but come from the AWS SDK's default chain
// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, shared config and profiles,
// web identity, IMDS), which s3fetch.New reads.
type S3 struct {
	// Bucket holds image tarballs and layers.
	Bucket string `toml:"bucket"`
	// Region is the bucket's AWS region (also used for SigV4 signing with
	// S3-compatible servers).
	Region string `toml:"region"`
	// Endpoint overrides the AWS endpoint, e.g. "http://127.0.0.1:7070" for
	// an S3-compatible server. Empty means AWS.
	Endpoint string `toml:"endpoint"`
	// PathStyle addresses buckets as http://host/bucket/key, which most
	// S3-compatible servers need.
	PathStyle bool `toml:"path_style"`
	// Prefix is prepended to image names to form object keys.
	Prefix string `toml:"prefix"`
	// LayerPrefix is prepended to layer names to form object keys; set, it
	// turns the S3 layer store on.
	LayerPrefix string `toml:"layer_prefix"`
	// BlockPrefix is where block images (blockimage, docs/s3.md) live:
	// set, publish-base uploads bases under it and process-image fills
	// from a block image there instead of extracting the tarball.
	BlockPrefix string `toml:"block_prefix"`

	// PartSize is the size of each ranged GET (and of multipart upload
	// parts): bytes, or a string such as "5MiB". At most Concurrency+1
	// parts are buffered per download.
	PartSize Size `toml:"part_size"`
	// Concurrency is how many ranged GETs run ahead of the reader per
	// download, and how many parts an upload sends at once.
	Concurrency int `toml:"concurrency"`
	// DownloadTimeout bounds a whole download, from the first request to
	// Close. Overridden by env DOWNLOAD_TIMEOUT.
	DownloadTimeout Seconds `toml:"download_timeout"`
	// PartTimeout is the longest a ranged GET may go without receiving a
	// byte (including waiting for headers) before it is abandoned and
	// resumed. It catches stalled connections long before DownloadTimeout.
	PartTimeout Seconds `toml:"part_timeout"`
	// DownloadQueueSize limits concurrent downloads across a client; more
	// wait in a queue. Overridden by env DOWNLOAD_QUEUE_SIZE.
	DownloadQueueSize int `toml:"download_queue_size"`
	// MaxRetries is how many times one part (or one request) is retried
	// after a transient failure before the download fails.
	MaxRetries int `toml:"max_retries"`
	// RetryBaseDelay is the first backoff delay; it doubles per retry, with
	// jitter, up to RetryMaxDelay.
	RetryBaseDelay Seconds `toml:"retry_base_delay"`
	// RetryMaxDelay caps the backoff delay.
	RetryMaxDelay Seconds `toml:"retry_max_delay"`
}

// defaultS3 is the [s3] section when the file says nothing: the values
// s3fetch.DefaultConfig has too (both from internal/defaults).
func defaultS3() S3 {
	return S3{
		Bucket:            defaults.S3Bucket,
		Region:            defaults.S3Region,
		Prefix:            defaults.S3Prefix,
		PartSize:          defaults.S3PartSize,
		Concurrency:       defaults.S3Concurrency,
		DownloadTimeout:   defaults.S3DownloadTimeoutSeconds,
		PartTimeout:       defaults.S3PartTimeoutSeconds,
		DownloadQueueSize: defaults.S3DownloadQueueSize,
		MaxRetries:        defaults.S3MaxRetries,
		RetryBaseDelay:    defaults.S3RetryBaseDelaySeconds,
		RetryMaxDelay:     defaults.S3RetryMaxDelaySeconds,
	}
}

// applyEnv applies the environment overrides DOWNLOAD_TIMEOUT (seconds or
// a duration) and DOWNLOAD_QUEUE_SIZE. A malformed value is an error
// naming the variable rather than being silently ignored.
func (c *S3) applyEnv() error {
	if v, ok := os.LookupEnv("DOWNLOAD_TIMEOUT"); ok && v != "" {
		d, err := units.ParseSeconds(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("invalid DOWNLOAD_TIMEOUT %q: want a positive number of seconds or a duration such as 5m", v)
		}
		c.DownloadTimeout = d
	}
	if v, ok := os.LookupEnv("DOWNLOAD_QUEUE_SIZE"); ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("invalid DOWNLOAD_QUEUE_SIZE %q: want a positive integer", v)
		}
		c.DownloadQueueSize = n
	}
	return nil
}

// validate reports the first setting that cannot work: the rules are
// internal/s3check's, which s3fetch.New checks too.
func (c *S3) validate() error {
	return s3check.Settings[units.Size, units.Seconds]{Bucket: c.Bucket, Region: c.Region, LayerPrefix: c.LayerPrefix,
		BlockPrefix: c.BlockPrefix,
		PartSize:    c.PartSize, Concurrency: c.Concurrency, DownloadTimeout: c.DownloadTimeout, PartTimeout: c.PartTimeout,
		DownloadQueueSize: c.DownloadQueueSize, MaxRetries: c.MaxRetries,
		RetryBaseDelay: c.RetryBaseDelay, RetryMaxDelay: c.RetryMaxDelay}.Validate()
}
