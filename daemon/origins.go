package daemon

import (
	"context"
	"time"

	"github.com/containerd/log"
)

// originSweepInterval is how often the daemon removes the lazily-backed
// origins nothing uses any more: a base removed by containerd's own gc
// (not delete-image) leaves its origin, and a device the reaper had not
// deleted yet at the last sweep kept it.
const originSweepInterval = 5 * time.Minute

// sweepOrigins removes the origins nothing uses; under gcMu, held by
// the caller (gc, delete-image, sweepOriginsEvery).
func (b *backend) sweepOrigins(ctx context.Context) {
	if b.svc == nil {
		return
	}
	if _, err := b.svc.SweepOrigins(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("sweeping unused lazy origins")
	}
}

// sweepOriginsEvery sweeps at start and then every interval until ctx
// ends. It takes gcMu like gc and delete-image do, and skips a tick
// while one of them holds it (they sweep when they are done), so that
// shutdown never waits behind a long gc. The caller waits for it to
// return before the service closes under it.
func (b *backend) sweepOriginsEvery(ctx context.Context, interval time.Duration, sweep func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if b.gcMu.TryLock() {
			sweep(ctx)
			b.gcMu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
