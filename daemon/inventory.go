package daemon

import (
	"context"
	"errors"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/gc"
)

// The inventory itself is gc's (gc/inventory.go); the daemon wires it to
// its store and pool and converts it to the admin API's types.

func (b *backend) inventory() gc.Inventory {
	return gc.Inventory{Store: b.store, Pool: b.pool.Name(), Namespace: b.cfg.Containerd.Namespace, Usage: b.usage}
}

// Images lists the imported images (see gc.Inventory.Images).
func (b *backend) Images(ctx context.Context) ([]admin.ImageInfo, error) {
	imgs, err := b.inventory().Images(ctx)
	if err != nil {
		return nil, err
	}
	return adminwire.Images(imgs), nil
}

// Snapshots returns the snapshot tree (see gc.Inventory.Snapshots).
func (b *backend) Snapshots(ctx context.Context) (admin.SnapshotTree, error) {
	tree, err := b.inventory().Snapshots(ctx)
	if err != nil {
		return admin.SnapshotTree{}, err
	}
	return adminwire.SnapshotTree(tree), nil
}

// usage reads every device's mapped data from a metadata snapshot of the
// pool; while a gc or delete-image (which read one too, under gcMu) runs
// it does not wait for them, and active devices are asked instead.
func (b *backend) usage(ctx context.Context) gc.DeviceUsage {
	return gc.LiveUsage(ctx, b.pool, func(ctx context.Context) (*thinmeta.Metadata, error) {
		if !b.gcMu.TryLock() {
			return nil, errors.New("a gc or delete-image is running; inactive devices show their recorded usage")
		}
		defer b.gcMu.Unlock()
		return thinmeta.ReadPool(ctx, b.pool.Name())
	})
}
