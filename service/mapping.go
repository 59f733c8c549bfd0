package service

import (
	"context"
	"path/filepath"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/fillmount"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// MetadataPath is where the metadata database of a root_dir lives.
func MetadataPath(cfg config.Config) string {
	return filepath.Join(cfg.RootDir, "metadata.db")
}

// PoolConfig translates the [pool] section for dmpool.
func PoolConfig(cfg config.Config) dmpool.Config {
	return dmpool.Config{
		Name:           cfg.Pool.Name,
		DataDevice:     cfg.Pool.DataDevice,
		MetadataDevice: cfg.Pool.MetadataDevice,
		DataFile:       cfg.Pool.DataFile,
		MetadataFile:   cfg.Pool.MetadataFile,
		DataSize:       int64(cfg.Pool.DataSize),
		MetadataSize:   int64(cfg.Pool.MetadataSize),
		BlockSize:      uint32(cfg.Pool.BlockSize),
		LowWaterMark:   cfg.Pool.LowWaterMark,
		// The zero value of dmpool zeroes: only an explicit false skips it.
		SkipBlockZeroing: !cfg.Pool.ZeroNewBlocks,
		CheckOnStart:     cfg.Pool.CheckOnStart,
	}
}

// OpenPool opens (creating or re-creating) the pool of cfg. dmpool makes
// the directories of a new loopback pool's files itself (the default
// <root_dir>/pool/ does not exist on a fresh host), and only when both
// files are absent: one without the other stops the start, changing
// nothing. setup-pool, gc and the daemon all open the pool here.
func OpenPool(ctx context.Context, cfg config.Config) (*dmpool.Pool, dmpool.OpenResult, error) {
	return dmpool.Open(ctx, PoolConfig(cfg))
}

// S3Config translates the [s3] section for s3fetch (and layerstore).
func S3Config(cfg config.Config) s3fetch.Config {
	s := cfg.S3
	return s3fetch.Config{
		Bucket:            s.Bucket,
		Region:            s.Region,
		Endpoint:          s.Endpoint,
		PathStyle:         s.PathStyle,
		Prefix:            s.Prefix,
		LayerPrefix:       s.LayerPrefix,
		BlockPrefix:       s.BlockPrefix,
		PartSize:          s.PartSize,
		Concurrency:       s.Concurrency,
		DownloadTimeout:   s.DownloadTimeout,
		PartTimeout:       s.PartTimeout,
		DownloadQueueSize: s.DownloadQueueSize,
		MaxRetries:        s.MaxRetries,
		RetryBaseDelay:    s.RetryBaseDelay,
		RetryMaxDelay:     s.RetryMaxDelay,
	}
}

// NewS3 builds the S3 client of cfg; it makes no request.
func NewS3(ctx context.Context, cfg config.Config) (*s3fetch.Client, error) {
	return s3fetch.New(ctx, S3Config(cfg))
}

// ExtractOptions maps the [extract] section onto the extractor's limits.
func ExtractOptions(cfg config.Config) extract.Options {
	e := cfg.Extract
	return extract.Options{
		MaxFileSize:    int64(e.MaxFileSize),
		MaxTotalSize:   int64(e.MaxTotalSize),
		MaxEntries:     e.MaxEntries,
		StrictSymlinks: e.StrictSymlinks,
		AllowDevices:   e.AllowDevices,
	}
}

// mountDir is the private directory of temporary mounts under root_dir.
func mountDir(cfg config.Config) string { return fillmount.Dir(cfg.RootDir) }
