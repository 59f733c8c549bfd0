package daemon

import (
	"context"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
)

// PublishBase is importer.PublishBase. It is not serialised with gc like
// DeleteImage: it reads the base through a containerd view, which keeps
// the base from being removed under it.
func (b *backend) PublishBase(ctx context.Context, id string) (admin.PublishBaseResult, error) {
	p, err := b.importer.PublishBase(ctx, id)
	return adminwire.PublishedBase(p), err
}
