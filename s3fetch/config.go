package s3fetch

import (
	"github.com/superfly/flyio-image-manager/internal/defaults"
	"github.com/superfly/flyio-image-manager/internal/s3check"
	"github.com/superfly/flyio-image-manager/internal/units"
)

// Seconds is a duration in configuration: a number of seconds or a string
// such as "5m" (internal/units, the codec every config key, flag and env
// var shares).
type Seconds = units.Seconds

// Config is what a Client needs: service builds it from the [s3] section
// of the configuration (config.S3, which decodes the file and applies
// the environment overrides; this type is never decoded itself).
type Config struct {
	// Bucket holds image tarballs and layers.
	Bucket string
	// Region is the bucket's AWS region (also used for SigV4 signing with
	// S3-compatible servers).
	Region string
	// Endpoint overrides the AWS endpoint, e.g. "http://127.0.0.1:7070" for
	// an S3-compatible server. Empty means AWS.
	Endpoint string
	// PathStyle addresses buckets as http://host/bucket/key, which most
	// S3-compatible servers need.
	PathStyle bool
	// Prefix is prepended to image names to form object keys.
	Prefix string
	// LayerPrefix is prepended to layer names to form object keys.
	LayerPrefix string
	// BlockPrefix is where block images live (blockimage).
	BlockPrefix string

	// PartSize is the size of each ranged GET (and of multipart upload
	// parts): bytes, or a string such as "5MiB". At most Concurrency+1
	// parts are buffered per download.
	PartSize units.Size
	// Concurrency is how many ranged GETs run ahead of the reader per
	// download, and how many parts an upload sends at once.
	Concurrency int
	// DownloadTimeout bounds a whole download, from the first request to
	// Close. (config applies env DOWNLOAD_TIMEOUT to [s3].)
	DownloadTimeout Seconds
	// PartTimeout is the longest a ranged GET may go without receiving a
	// byte (including waiting for headers) before it is abandoned and
	// resumed. It catches stalled connections long before DownloadTimeout.
	PartTimeout Seconds
	// DownloadQueueSize limits concurrent downloads across a Client; more
	// wait in a queue. (config applies env DOWNLOAD_QUEUE_SIZE to [s3].)
	DownloadQueueSize int
	// MaxRetries is how many times one part (or one request) is retried
	// after a transient failure before the download fails.
	MaxRetries int
	// RetryBaseDelay is the first backoff delay; it doubles per retry, with
	// jitter, up to RetryMaxDelay.
	RetryBaseDelay Seconds
	// RetryMaxDelay caps the backoff delay.
	RetryMaxDelay Seconds
}

// Defaults, exported so that documentation and other packages can name
// them; the values are internal/defaults', shared with config.Default.
const (
	// DefaultBucket is none: a made-up default would look like a real
	// bucket in messages. Commands that need one say "set [s3] bucket".
	DefaultBucket            = defaults.S3Bucket
	DefaultRegion            = defaults.S3Region
	DefaultPrefix            = defaults.S3Prefix
	DefaultPartSize          = defaults.S3PartSize
	DefaultConcurrency       = defaults.S3Concurrency
	DefaultDownloadTimeout   = Seconds(defaults.S3DownloadTimeoutSeconds)
	DefaultPartTimeout       = Seconds(defaults.S3PartTimeoutSeconds)
	DefaultDownloadQueueSize = defaults.S3DownloadQueueSize
	DefaultMaxRetries        = defaults.S3MaxRetries
	DefaultRetryBaseDelay    = Seconds(defaults.S3RetryBaseDelaySeconds)
	DefaultRetryMaxDelay     = Seconds(defaults.S3RetryMaxDelaySeconds)

	// MinPartSize is S3's minimum multipart upload part size; downloads
	// could go smaller but one knob serves both.
	MinPartSize = 5 << 20
)

// DefaultConfig returns the configuration used when the file says nothing.
func DefaultConfig() Config {
	return Config{
		Bucket:            DefaultBucket,
		Region:            DefaultRegion,
		Prefix:            DefaultPrefix,
		PartSize:          DefaultPartSize,
		Concurrency:       DefaultConcurrency,
		DownloadTimeout:   DefaultDownloadTimeout,
		PartTimeout:       DefaultPartTimeout,
		DownloadQueueSize: DefaultDownloadQueueSize,
		MaxRetries:        DefaultMaxRetries,
		RetryBaseDelay:    DefaultRetryBaseDelay,
		RetryMaxDelay:     DefaultRetryMaxDelay,
	}
}

// Validate reports the first setting that cannot work, as config does at
// load (the rules are internal/s3check's). An empty bucket is not an
// error here: the daemon runs without S3, and the operations that need a
// bucket fail with ErrNoBucket.
func (c *Config) Validate() error {
	return s3check.Settings[units.Size, units.Seconds]{Bucket: c.Bucket, Region: c.Region, LayerPrefix: c.LayerPrefix, BlockPrefix: c.BlockPrefix,
		PartSize: c.PartSize, Concurrency: c.Concurrency, DownloadTimeout: c.DownloadTimeout, PartTimeout: c.PartTimeout,
		DownloadQueueSize: c.DownloadQueueSize, MaxRetries: c.MaxRetries,
		RetryBaseDelay: c.RetryBaseDelay, RetryMaxDelay: c.RetryMaxDelay}.Validate()
}

// ImageKey is the object key of the image tarball called name.
func (c *Config) ImageKey(name string) string { return c.Prefix + name }
