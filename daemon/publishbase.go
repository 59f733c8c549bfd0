package daemon

import (
	"context"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
)

// PublishBase is importer.PublishBase, its view made on the daemon's own
// snapshotter. It is not serialised with gc like DeleteImage: the view
// keeps the base from being removed under it.
func (b *backend) PublishBase(ctx context.Context, id string) (admin.PublishBaseResult, error) {
	p, err := b.importer.PublishBase(ctx, id, b.sn)
	return adminwire.PublishedBase(p), err
}
