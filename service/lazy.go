package service

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/loopdev"
	"github.com/superfly/flyio-image-manager/internal/nbd"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/lazy"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// onDemandFetches is how many on-demand chunk fetches one origin's
// readers may have in S3 at once, beside its prefetch.
const onDemandFetches = 16

// openOrigins opens the lazily-backed origins under [lazy] cache_dir
// and attaches each again (the daemon's start, also after a reboot).
// Its S3 client is its own: an on-demand read must not queue behind a
// tarball import in the shared downloads queue. switchTo is called when
// an origin's cache is complete (the snapshotter's SwitchOrigin, which
// does not exist yet when this runs).
func openOrigins(ctx context.Context, cfg config.Config, switchTo func(ctx context.Context, name, oldDev, newDev string) error) (*lazy.Manager, error) {
	s3cfg := S3Config(cfg)
	s3cfg.PartSize = units.Size(blockimage.MaxChunkSize)
	s3cfg.Concurrency = 1
	s3cfg.DownloadQueueSize = cfg.Lazy.Prefetch + onDemandFetches
	client, err := s3fetch.New(ctx, s3cfg)
	if err != nil {
		return nil, fmt.Errorf("lazy origins: %w", err)
	}
	m, err := lazy.Open(ctx, lazy.Config{
		Dir:           cfg.Lazy.CacheDir,
		Store:         blockimage.NewS3Store(client),
		Prefix:        cfg.S3.BlockPrefix,
		Prefetch:      cfg.Lazy.Prefetch,
		ReadTimeout:   cfg.Lazy.ReadTimeout.Duration(),
		PrefetchQuiet: prefetchQuiet(cfg.Lazy),
		AttachServed:  attachServed,
		AttachFile:    attachFile,
		OnSwitch:      switchTo,
	})
	if err != nil {
		return nil, fmt.Errorf("lazy origins in %s: %w", cfg.Lazy.CacheDir, err)
	}
	log.G(ctx).Infof("lazy origins: %d under %s", len(m.Status()), cfg.Lazy.CacheDir)
	return m, nil
}

// prefetchQuiet is [lazy] prefetch_quiet for lazy.Config, where 0 is
// the default and no wait is negative.
func prefetchQuiet(l config.Lazy) time.Duration {
	if d := l.PrefetchQuiet.Duration(); d > 0 {
		return d
	}
	return -1
}

// attachServed serves an origin over the kernel's NBD driver.
func attachServed(ctx context.Context, size int64, r io.ReaderAt) (lazy.Device, error) {
	d, err := nbd.Connect(ctx, size, r, nbd.Options{Referenced: dmReferenced})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// dmReferenced says whether a dm table names device major:minor: an
// nbd index whose connection died under tables (ours, or a crashed
// daemon's) must not be connected for another image while they use it.
func dmReferenced(major, minor uint32) (bool, error) {
	users, err := dmpool.DevicesUsing(major, minor)
	return len(users) > 0, err
}

// attachFile attaches a complete cache as a read-only loop device. The
// loop clears itself once the last dm table using it is gone after its
// handle is closed, so a killed daemon leaves no loop behind that no
// table needs, and its next start finds the loop tables still use.
func attachFile(ctx context.Context, f *os.File, size int64) (lazy.Device, error) {
	d, err := loopdev.AttachFile(f, loopdev.Params{ReadOnly: true, Autoclear: true, Direct: true})
	if err != nil {
		return nil, err
	}
	return loopDevice{d}, nil
}

type loopDevice struct{ d *loopdev.Device }

func (l loopDevice) Path() string { return l.d.Path }
func (l loopDevice) Close() error { return l.d.Close() }
