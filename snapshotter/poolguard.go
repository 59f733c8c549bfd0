package snapshotter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// PoolGuard refuses new devices once the pool's data or metadata usage
// reaches the [pool] full_threshold. Without it, writers on a pool that
// runs out of space either get EIO (error_if_no_space) or, under
// queue_if_no_space, hang until the kernel's no_space_timeout: failing
// the next Prepare early with a clear message is better than either. The
// check is one status ioctl, cached for a second; nothing is sticky, so
// work resumes as soon as space is freed.
type PoolGuard struct {
	pool      *dmpool.Pool
	threshold int

	mu  sync.Mutex
	at  time.Time
	st  dmpool.Status
	err error
}

// guardCacheTTL is how long one status reading answers Check.
const guardCacheTTL = time.Second

// NewPoolGuard guards pool at threshold percent (1..100).
func NewPoolGuard(pool *dmpool.Pool, threshold int) *PoolGuard {
	return &PoolGuard{pool: pool, threshold: threshold}
}

// Threshold is the configured percentage.
func (g *PoolGuard) Threshold() int { return g.threshold }

// Check fails with dmpool.ErrPoolFull when new work must be refused.
func (g *PoolGuard) Check(ctx context.Context, what string) error {
	g.mu.Lock()
	if time.Since(g.at) > guardCacheTTL {
		g.st, g.err = g.pool.Status(ctx)
		g.at = time.Now()
	}
	st, err := g.st, g.err
	g.mu.Unlock()
	if err != nil {
		return nil // the create itself reports a missing or failed pool
	}
	return FullError(g.pool.Name(), what, st, g.threshold)
}

// FullError is the error new work gets on a pool at or above threshold
// percent of its data or metadata space, or nil.
func FullError(pool, what string, st dmpool.Status, threshold int) error {
	data, meta := Usage(st)
	if data < float64(threshold) && meta < float64(threshold) && !st.Full() {
		return nil
	}
	return fmt.Errorf("pool %q: %s: %w (data %.1f%% used, metadata %.1f%% used, [pool] full_threshold = %d%%; "+
		"free space with 'flyio-image-manager gc' or by removing images and containers)", pool, what, dmpool.ErrPoolFull, data, meta, threshold)
}

// Usage returns the data and metadata usage in percent.
func Usage(st dmpool.Status) (data, meta float64) {
	if st.TotalDataBlocks > 0 {
		data = 100 * float64(st.UsedDataBlocks) / float64(st.TotalDataBlocks)
	}
	if st.TotalMetaBlocks > 0 {
		meta = 100 * float64(st.UsedMetaBlocks) / float64(st.TotalMetaBlocks)
	}
	return data, meta
}

// Guard returns pool as the snapshotter should see it: creating a device,
// or handing out a spare, first asks g. Every other method is the pool's
// own, so the trouble watch still finds the event waiter.
func Guard(pool *dmpool.Pool, g *PoolGuard) Pool { return guardedPool{Pool: pool, guard: g} }

// guardedPool is the pool the snapshotter sees: creating a device first
// asks the guard.
type guardedPool struct {
	*dmpool.Pool
	guard *PoolGuard
}

func (p guardedPool) CreateThin(ctx context.Context, id uint32) error {
	if err := p.guard.Check(ctx, fmt.Sprintf("create thin %d", id)); err != nil {
		return err
	}
	return p.Pool.CreateThin(ctx, id)
}

// Admit lets the snapshotter ask before it hands out a spare device,
// which creates nothing the pool or the guard would otherwise see: a
// read-only or failed pool refuses it as it would refuse a create.
func (p guardedPool) Admit(ctx context.Context, what string) error {
	if err := p.Pool.CheckWritable(ctx, what); err != nil {
		return err
	}
	return p.guard.Check(ctx, what)
}

func (p guardedPool) CreateSnapshot(ctx context.Context, id, origin uint32) error {
	if err := p.guard.Check(ctx, fmt.Sprintf("create snapshot %d of %d", id, origin)); err != nil {
		return err
	}
	return p.Pool.CreateSnapshot(ctx, id, origin)
}
