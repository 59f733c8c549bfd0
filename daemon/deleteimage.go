package daemon

import (
	"context"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/importer"
)

// DeleteImage is importer.ImageDeleter wired to the daemon's parts, one
// at a time and never beside a gc (gcMu).
func (b *backend) DeleteImage(ctx context.Context, id string) (admin.DeleteImageResult, error) {
	b.gcMu.Lock()
	defer b.gcMu.Unlock()
	d := importer.ImageDeleter{
		Store: b.store, Namespace: b.cfg.Containerd.Namespace, Snapshotter: b.cfg.Containerd.Snapshotter,
		References: b.containerd(), Remove: b.sn.Remove,
	}
	if b.cfg.Containerd.Address != "" {
		d.Client = b.cd.Client
	}
	res, err := d.Delete(ctx, id)
	if err == nil {
		b.sweepOrigins(ctx)
	}
	return adminwire.DeletedImage(res), err
}
