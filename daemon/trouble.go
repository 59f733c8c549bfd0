package daemon

import (
	"context"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/metadata"
)

// AcceptLostWrites lets one container snapshot that Commit refuses for
// pool trouble be committed, on the operator's word (snapshotter's
// AcceptLostWrites, which logs it).
func (b *backend) AcceptLostWrites(ctx context.Context, req admin.AcceptLostWritesRequest) (admin.AcceptLostWritesResult, error) {
	res, err := b.sn.AcceptLostWrites(ctx, req.Key, req.Generation)
	return adminwire.LostWritesAccepted(res), err
}

// poolTroubleStatus is status's trouble section: the generation on record
// and the active snapshots Commit would refuse now, those prepared before
// the latest trouble or, while the pool is in trouble (poolTrouble, the
// kernel's mode), every one.
func poolTroubleStatus(tx *metadata.Tx, poolTrouble string) (*admin.PoolTrouble, error) {
	pt, err := tx.PoolTrouble()
	if err != nil {
		return nil, err
	}
	refused := 0
	err = tx.Snapshots(func(_ string, s *metadata.Snapshot, err error) error {
		if err == nil && (pt.Refuses(s) || (s.Kind == snapshots.KindActive && poolTrouble != "")) {
			refused++
		}
		return nil
	})
	return adminwire.PoolTrouble(pt, refused), err
}
