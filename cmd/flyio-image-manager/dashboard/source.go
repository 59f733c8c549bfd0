package dashboard

import (
	"context"
	"sync"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// Source is where the dashboard reads from and sends imports to. The
// dashboard only ever calls it from commands (never from View), each call
// under its own timeout, so a slow daemon or S3 endpoint shows up as an
// error in one panel instead of a frozen screen.
type Source interface {
	// Status is the daemon's pool and record summary (admin.Client.Status).
	Status(ctx context.Context) (admin.Status, error)
	// Runs lists the daemon's process-image runs, finished or not.
	Runs(ctx context.Context) ([]admin.Run, error)
	// ListImages lists the image tarballs under the configured S3 prefix.
	ListImages(ctx context.Context) ([]s3fetch.ObjectInfo, error)
	// Images lists the images the daemon has imported.
	Images(ctx context.Context) ([]admin.ImageInfo, error)
	// ProcessImage asks the daemon to import an S3 tarball.
	ProcessImage(ctx context.Context, req admin.ProcessImageRequest) (admin.Run, error)
	// Cancel asks the daemon to stop run id (admin.Client.Cancel): the
	// run's final record, or the daemon's refusal (unknown, finished, or
	// committing and too late to cancel).
	Cancel(ctx context.Context, id string) (admin.Run, error)
}

// DaemonSource is the Source of a real node: the daemon's admin socket
// for status, runs and imports, and S3 (listed directly, as list-images
// does) for the images under the prefix.
type DaemonSource struct {
	admin  *admin.Client
	s3cfg  s3fetch.Config
	prefix string

	mu sync.Mutex
	s3 *s3fetch.Client
}

// NewDaemonSource returns a Source over the admin client and the S3
// configuration, listing under prefix.
func NewDaemonSource(cl *admin.Client, s3cfg s3fetch.Config, prefix string) *DaemonSource {
	return &DaemonSource{admin: cl, s3cfg: s3cfg, prefix: prefix}
}

// Status implements Source.
func (s *DaemonSource) Status(ctx context.Context) (admin.Status, error) { return s.admin.Status(ctx) }

// Runs implements Source.
func (s *DaemonSource) Runs(ctx context.Context) ([]admin.Run, error) { return s.admin.Runs(ctx) }

// Images implements Source.
func (s *DaemonSource) Images(ctx context.Context) ([]admin.ImageInfo, error) {
	return s.admin.Images(ctx)
}

// ProcessImage implements Source.
func (s *DaemonSource) ProcessImage(ctx context.Context, req admin.ProcessImageRequest) (admin.Run, error) {
	return s.admin.ProcessImage(ctx, req)
}

// Cancel implements Source.
func (s *DaemonSource) Cancel(ctx context.Context, id string) (admin.Run, error) {
	return s.admin.Cancel(ctx, id)
}

// ListImages implements Source. The S3 client is built on first use and
// again after a failure to build it, so a bad configuration or missing
// credentials are an error in the Images panel that `r` retries rather
// than a dashboard that does not start.
func (s *DaemonSource) ListImages(ctx context.Context) ([]s3fetch.ObjectInfo, error) {
	s.mu.Lock()
	cl := s.s3
	if cl == nil {
		var err error
		if cl, err = s3fetch.New(ctx, s.s3cfg); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.s3 = cl
	}
	s.mu.Unlock()
	return cl.List(ctx, s.prefix)
}
