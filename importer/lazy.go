package importer

import (
	"context"
	"fmt"
	"strconv"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// Origins is what a lazy run needs of the daemon's origins (package
// lazy's Manager): one served from a block image, under a name.
type Origins interface {
	// Create attaches origin name serving m (or finds it attached
	// already for the same chunk table) and starts fetching it.
	Create(ctx context.Context, name string, m *blockimage.Manifest) error
}

// wantLazy says whether req makes a lazily-backed base.
func (im *Importer) wantLazy(req Request) (bool, error) {
	lazy := im.cfg.LazyDefault
	if req.Lazy != nil {
		lazy = *req.Lazy
	}
	if lazy && im.cfg.Origins == nil {
		return false, fmt.Errorf("--lazy: this daemon serves no external origins ([lazy] cache_dir, nbd): %w", errdefs.ErrFailedPrecondition)
	}
	return lazy, nil
}

// originName is the origin of a manifest's chunk table: the same block
// image imported again (after delete-image, under another id) finds its
// origin, and its cache, still there.
func originName(m *blockimage.Manifest) string { return "bi-" + chunkTable(m)[:32] }

// fillLazy makes the run's base a blank thin device of the manifest's
// size whose external origin serves the block image: nothing is written
// to it, every read of the image goes to the origin, which fetches what
// is read on demand and the rest in the background (package lazy). It
// is usable as soon as it is committed.
func (im *Importer) fillLazy(ctx context.Context, sn snapshots.Snapshotter, key string, rs *runState) (extract.Result, error) {
	r := rs.snapshot()
	m, res, err := im.loadBlock(ctx, r)
	if err != nil {
		return res, err
	}
	name := originName(m)
	im.setState(rs, metadata.RunExtracting, func(r *metadata.Run) { r.Origin = name })
	if err := im.cfg.Origins.Create(ctx, name, m); err != nil {
		return res, fmt.Errorf("attaching origin %s of block image %s: %w", name, r.Block, err)
	}
	_, err = sn.Prepare(ctx, key, "", snapshots.WithLabels(map[string]string{
		"flyio.io/import-run":           r.ID,
		"flyio.io/s3-key":               r.Key,
		snapshotter.LabelBlank:          m.FSType,
		snapshotter.LabelExternalOrigin: name,
		snapshots.LabelSnapshotMaxSize:  strconv.FormatInt(m.DeviceSize, 10),
		"flyio.io/block-image":          r.Block,
	}))
	if err != nil {
		return res, fmt.Errorf("preparing a device on origin %s for block image %s: %w", name, r.Block, err)
	}
	log.G(ctx).Infof("base of block image %s reads from origin %s; its %d chunks are fetched on demand and in the background", r.Block, name, len(m.Chunks))
	return res, nil
}

// OriginsBusy returns the origins of the lazy runs in progress: a run
// names its origin before it attaches it, and holds it until its base is
// committed (whose record then names it), so an origin on this list must
// not be removed.
func (im *Importer) OriginsBusy() map[string]bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	busy := map[string]bool{}
	for _, rs := range im.active {
		if r := rs.snapshot(); r.Lazy {
			// A lazy run not yet at its fill has no origin name yet:
			// the name is set under no lock of ours, so "" means it
			// may take any; count it as holding them all.
			if r.Origin == "" {
				busy["*"] = true
			} else {
				busy[r.Origin] = true
			}
		}
	}
	return busy
}
