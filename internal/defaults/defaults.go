// Package defaults holds the default values that are needed in two
// places: in the configuration (config.Default, what an operator gets
// without a key) and in the package that falls back on them when a
// caller leaves a field zero (snapshotter.New, importer.New,
// s3fetch.DefaultConfig). Written once here, the two cannot drift apart.
// It is a leaf: untyped constants, importing nothing.
package defaults

const (
	// BaseSize is the filesystem size, in bytes, of a parentless
	// snapshot ([snapshotter] base_size).
	BaseSize = 10 << 30
	// RemoteFillWaitSeconds bounds how long a Prepare waits for a
	// remote layer fill ([snapshotter] remote_fill_wait).
	RemoteFillWaitSeconds = 30
	// UnpackTimeoutSeconds bounds one extraction ([extract]
	// unpack_timeout).
	UnpackTimeoutSeconds = 1800
)

// The [s3] section's defaults (s3fetch.DefaultConfig documents each).
const (
	S3Bucket = ""
	S3Region = "us-east-1"
	S3Prefix = "images/"
	// S3PartSize keeps a download's buffers (concurrency+1 parts) at
	// 25 MiB: the S3 fill benchmark measured a 48 MiB peak RSS with 4 MiB
	// parts and 94 MiB with 16 MiB ones, against a 64 MiB budget.
	S3PartSize               = 5 << 20
	S3Concurrency            = 4
	S3DownloadTimeoutSeconds = 300
	S3PartTimeoutSeconds     = 60
	S3DownloadQueueSize      = 3
	S3MaxRetries             = 5
	S3RetryBaseDelaySeconds  = 0.2
	S3RetryMaxDelaySeconds   = 10
)
