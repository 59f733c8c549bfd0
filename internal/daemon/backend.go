package daemon

import (
	"context"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/internal/admin"
	"github.com/superfly/flyio-image-manager/metadata"
)

// backend implements the admin API over the daemon's parts.
type backend struct {
	pool     *dmpool.Pool
	store    *metadata.Store
	importer *importer.Importer
}

func (b *backend) ProcessImage(ctx context.Context, req importer.Request) (metadata.Run, error) {
	return b.importer.Submit(ctx, req)
}

func (b *backend) Run(id string) (metadata.Run, error) { return b.importer.Get(id) }

func (b *backend) Runs() ([]metadata.Run, error) { return b.importer.List() }

func (b *backend) Status(ctx context.Context) (admin.Status, error) {
	st := admin.Status{Pool: b.pool.Name(), Snapshots: map[string]int{}, Devices: map[string]int{}}
	var err error
	if st.PoolState, err = b.pool.Status(ctx); err != nil {
		return st, err
	}
	err = b.store.View(func(tx *metadata.Tx) error {
		tx.Snapshots(func(_ string, s *metadata.Snapshot, err error) error {
			if err == nil {
				st.Snapshots[s.Kind.String()]++
			}
			return nil
		})
		tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil {
				st.Devices[string(d.State)]++
			}
			return nil
		})
		imgs, err := tx.Images()
		st.Images = len(imgs)
		return err
	})
	runs, _ := b.importer.List()
	for _, r := range runs {
		if !r.State.Finished() {
			st.Runs = append(st.Runs, r)
		}
	}
	return st, err
}
