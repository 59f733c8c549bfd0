package daemon

import (
	"context"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/service"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// These names moved with issue 14 and stay here only so that files other
// changes of that issue rewrite compile unchanged: backend.go (PoolGuard,
// FullError) and test/ (MetadataPath, PoolConfig, OpenPool). New code
// uses snapshotter's and service's; delete this file once those land.

// PoolGuard is snapshotter.PoolGuard: the guard lives beside the pool
// the snapshotter creates devices on.
type PoolGuard = snapshotter.PoolGuard

// FullError is snapshotter.FullError.
var FullError = snapshotter.FullError

// MetadataPath is service.MetadataPath.
//
// Deprecated: use service.MetadataPath.
func MetadataPath(cfg config.Config) string { return service.MetadataPath(cfg) }

// PoolConfig is service.PoolConfig.
//
// Deprecated: use service.PoolConfig.
func PoolConfig(cfg config.Config) dmpool.Config { return service.PoolConfig(cfg) }

// OpenPool is service.OpenPool.
//
// Deprecated: use service.OpenPool.
func OpenPool(ctx context.Context, cfg config.Config) (*dmpool.Pool, dmpool.OpenResult, error) {
	return service.OpenPool(ctx, cfg)
}
