package importer

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Published is what PublishBase did.
type Published struct {
	Image       metadata.Image
	ManifestKey string
	Stats       blockimage.PublishStats
}

// PublishBase uploads the committed base of imported image id as a block
// image under the block prefix: the base device's mapped ranges (from
// the pool's metadata), cut into chunks the bucket does not already
// hold, and a manifest naming the tarball the base came from.
//
// The data is read through a view of the base made on views, the
// daemon's own snapshotter: a view keeps the base from being removed
// while it is read and needs no write access to it. Not through
// containerd: containerd removes a view from us only at its next
// garbage collection, and until then delete-image would refuse the
// base for the view depending on it.
func (im *Importer) PublishBase(ctx context.Context, id string, views snapshots.Snapshotter) (Published, error) {
	var out Published
	if im.cfg.BlockPrefix == "" {
		return out, fmt.Errorf("publish-base: [s3] block_prefix is not set: %w", errdefs.ErrFailedPrecondition)
	}
	ns := im.cd.Namespace()
	var (
		img  *metadata.Image
		run  *metadata.Run
		base *metadata.Snapshot
	)
	err := im.store.View(func(tx *metadata.Tx) (err error) {
		if img, err = tx.Image(id); err != nil {
			return fmt.Errorf("publish-base: no imported image %q: %w", id, err)
		}
		if run, err = tx.Run(img.RunID); err != nil {
			return fmt.Errorf("publish-base %s: its run %s: %w", id, img.RunID, err)
		}
		keys, err := gc.BaseSnapshots(tx, ns, img.ChainID)
		if err != nil {
			return err
		}
		for _, k := range keys {
			s, err := tx.Snapshot(k)
			if err == nil && s.Kind == snapshots.KindCommitted && s.State == metadata.SnapshotReady {
				base = s
				break
			}
		}
		if base == nil {
			return fmt.Errorf("publish-base %s: no committed base %s in namespace %s: %w", id, img.ChainID, ns, errdefs.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	out.Image = *img
	if b := im.s3.Config().Bucket; b != img.Bucket {
		return out, fmt.Errorf("publish-base %s: imported from bucket %s, the configured bucket is %s: %w", id, img.Bucket, b, errdefs.ErrFailedPrecondition)
	}
	cfg, err := blockConfigOf(run)
	if err != nil {
		return out, err
	}
	mapped, err := thinmeta.ReadPoolMapped(ctx, im.cfg.Pool, base.DeviceID)
	if err != nil {
		return out, fmt.Errorf("publish-base %s: mapped ranges of device %d: %w", id, base.DeviceID, err)
	}
	extents := make([]blockimage.Extent, len(mapped.Extents))
	for i, e := range mapped.Extents {
		extents[i] = blockimage.Extent{Offset: int64(e.Offset), Length: int64(e.Length)}
	}

	viewKey := publishViewPrefix + newRunID()
	mounts, err := views.View(ctx, viewKey, base.Key, snapshots.WithLabels(map[string]string{"flyio.io/publish-base": id}))
	if err != nil {
		return out, fmt.Errorf("publish-base %s: a view of base %s: %w", id, base.Key, err)
	}
	defer func() {
		if err := views.Remove(context.WithoutCancel(ctx), viewKey); err != nil {
			log.G(ctx).WithError(err).Warnf("publish-base %s: view %s left; the next start removes it", id, viewKey)
		}
	}()
	if len(mounts) != 1 || !strings.HasPrefix(mounts[0].Source, "/dev/") {
		return out, fmt.Errorf("publish-base %s: view mounts %+v are not one block device: %w", id, mounts, errdefs.ErrFailedPrecondition)
	}
	dev, err := os.Open(mounts[0].Source)
	if err != nil {
		return out, err
	}
	defer dev.Close()
	meta := blockimage.Meta{
		DeviceSize: int64(base.Size), FSType: base.FSType,
		Source: blockimage.Source{Key: img.Key, ETag: img.ETag}, Config: cfg,
	}
	_, out.Stats, err = blockimage.Publish(ctx, im.blockStore(), dev, extents, meta, blockimage.PublishOptions{Prefix: im.cfg.BlockPrefix})
	if err != nil {
		return out, fmt.Errorf("publish-base %s: %w", id, err)
	}
	out.ManifestKey = blockimage.ManifestKey(im.cfg.BlockPrefix, img.Key)
	return out, nil
}

// publishViewPrefix names PublishBase's views on the daemon's
// snapshotter. containerd knows nothing of them, and gc leaves keys it
// cannot map to containerd's alone, so one a killed daemon left would
// stay for good, its base undeletable.
const publishViewPrefix = "flyio-publish/"

// RemovePublishViews removes the views of publishes a previous daemon
// left (killed mid-read, or its Remove failed). Called at start, before
// the admin API serves: no publish is under way then.
func RemovePublishViews(ctx context.Context, views snapshots.Snapshotter) error {
	var keys []string
	if err := views.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindView && strings.HasPrefix(info.Name, publishViewPrefix) {
			keys = append(keys, info.Name)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("listing leftover publish-base views: %w", err)
	}
	for _, k := range keys {
		if err := views.Remove(ctx, k); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("removing leftover publish-base view %s: %w", k, err)
		}
		log.G(ctx).Infof("removed publish-base view %s a previous daemon left", k)
	}
	return nil
}
