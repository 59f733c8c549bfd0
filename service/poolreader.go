package service

import (
	"context"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/gc"
)

// PoolReader is how gc, the daemon's and the offline one alike, lists
// the pool's thin devices: from a metadata snapshot it takes and releases.
func PoolReader(pool string) gc.PoolReader {
	return func(ctx context.Context) (*thinmeta.Metadata, error) { return thinmeta.ReadPool(ctx, pool) }
}
