// Package s3check holds the rules an [s3] configuration must meet,
// written once: config checks them when it loads the file, and s3fetch.New
// checks them for callers that build an s3fetch.Config themselves. It is
// a leaf (config may not import s3fetch), so both can call it.
package s3check

import "fmt"

// Settings are the [s3] values the rules look at; the callers copy them
// from their own type (config.S3, s3fetch.Config). Size and Seconds are
// internal/units' types, which a leaf may not import: the messages print
// them as units writes them ("5MiB", "300s").
type Settings[Size interface {
	~int64
	fmt.Stringer
}, Seconds interface {
	~float64
	fmt.Stringer
}] struct {
	Bucket, Region, LayerPrefix   string
	BlockPrefix                   string
	PartSize                      Size
	Concurrency                   int
	DownloadTimeout, PartTimeout  Seconds
	DownloadQueueSize, MaxRetries int
	RetryBaseDelay, RetryMaxDelay Seconds
}

// Validate reports the first setting that cannot work, named by its key.
// An empty bucket is not an error here: the daemon runs without S3, and
// the operations that need a bucket fail with s3fetch.ErrNoBucket.
func (s Settings[Size, Seconds]) Validate() error {
	switch {
	case s.LayerPrefix != "" && s.Bucket == "":
		return fmt.Errorf("s3: layer_prefix %q turns the layer store on, which needs a bucket: set [s3] bucket", s.LayerPrefix)
	case s.BlockPrefix != "" && s.Bucket == "":
		return fmt.Errorf("s3: block_prefix %q turns block images on, which need a bucket: set [s3] bucket", s.BlockPrefix)
	case s.Region == "":
		return fmt.Errorf("s3: region must be set")
	case s.PartSize <= 0:
		return fmt.Errorf("s3: part_size must be positive, got %s", s.PartSize)
	case s.Concurrency <= 0:
		return fmt.Errorf("s3: concurrency must be positive, got %d", s.Concurrency)
	case s.DownloadTimeout <= 0:
		return fmt.Errorf("s3: download_timeout must be positive, got %v", s.DownloadTimeout)
	case s.PartTimeout <= 0:
		return fmt.Errorf("s3: part_timeout must be positive, got %v", s.PartTimeout)
	case s.DownloadQueueSize <= 0:
		return fmt.Errorf("s3: download_queue_size must be positive, got %d", s.DownloadQueueSize)
	case s.MaxRetries < 0:
		return fmt.Errorf("s3: max_retries must not be negative, got %d", s.MaxRetries)
	case s.RetryBaseDelay < 0 || s.RetryMaxDelay < 0:
		return fmt.Errorf("s3: retry delays must not be negative")
	}
	return nil
}
