package daemon

import (
	"context"
	"time"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/service"
)

// originSweepInterval is how often the daemon removes the lazily-backed
// origins nothing uses any more: a base removed by containerd's own gc
// (not delete-image) leaves its origin, and a device the reaper had not
// deleted yet at the last sweep kept it.
const originSweepInterval = 5 * time.Minute

// sweepOrigins removes the origins nothing uses; under gcMu, held by
// the caller (gc, delete-image).
func (b *backend) sweepOrigins(ctx context.Context) {
	if b.svc == nil {
		return
	}
	if _, err := b.svc.SweepOrigins(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("sweeping unused lazy origins")
	}
}

// sweepOriginsEvery sweeps at start and then every interval until ctx
// ends.
func sweepOriginsEvery(ctx context.Context, svc *service.Service, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := svc.SweepOrigins(ctx); err != nil {
			log.G(ctx).WithError(err).Warn("sweeping unused lazy origins")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
