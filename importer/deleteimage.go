package importer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/metadata"
)

// ImageDeleter undoes a process-image: delete-image. It is the importer's
// domain (the image, its run and its base are what an import made); the
// daemon wires it to its parts and serialises it with gc.
type ImageDeleter struct {
	Store *metadata.Store
	// Namespace and Snapshotter are [containerd] namespace and
	// snapshotter: where imported images and their bases live.
	Namespace   string
	Snapshotter string
	// Client is the containerd client, nil when no [containerd] address
	// is configured; References is gc's view of the same containerd.
	Client     func(ctx context.Context) (*client.Client, error)
	References gc.Containerd
	// Remove removes one of our snapshots (the snapshotter's Remove).
	Remove func(ctx context.Context, key string) error
}

// DeletedImage says what delete-image removed.
type DeletedImage struct {
	Image metadata.Image
	// Snapshots are the base snapshot keys removed with it (none when
	// another imported image shares the base).
	Snapshots []string
	// Kept are base snapshots left in place because a containerd
	// namespace still uses them; gc removes them once none does.
	Kept []string
}

// Delete removes an image process-image imported: its containerd
// image and, unless another imported image shares it, its base snapshot.
// Like the predecessor's images table, whose snapshots referenced their
// base through a foreign key, it refuses while any snapshot still depends
// on the base, and names them. The caller runs one at a time, and none
// beside a gc.
func (b ImageDeleter) Delete(ctx context.Context, id string) (DeletedImage, error) {
	ns := b.Namespace
	var (
		img      *metadata.Image
		bases    []string
		deps     []string
		shared   []string
		notFound error
	)
	err := b.Store.View(func(tx *metadata.Tx) (err error) {
		if img, err = tx.Image(id); err != nil {
			notFound = err
			return nil
		}
		if bases, err = gc.BaseSnapshots(tx, ns, img.ChainID); err != nil {
			return err
		}
		deps = gc.Dependents(tx, bases)
		imgs, err := tx.Images()
		for _, o := range imgs {
			if o.ID != id && o.ChainID == img.ChainID {
				shared = append(shared, o.ID)
			}
		}
		return err
	})
	if err != nil {
		return DeletedImage{}, err
	}
	if notFound != nil {
		return DeletedImage{}, fmt.Errorf("delete-image: no imported image %q: %w", id, errdefs.ErrNotFound)
	}
	res := DeletedImage{Image: *img, Snapshots: []string{}}
	if len(deps) > 0 {
		return res, fmt.Errorf("delete-image %s: FOREIGN KEY constraint failed: base %s still has %d dependent snapshot(s): %s; "+
			"remove the containers (and images) built on it first: %w",
			id, img.ChainID, len(deps), strings.Join(deps, ", "), errdefs.ErrFailedPrecondition)
	}
	if b.Client == nil {
		return res, fmt.Errorf("delete-image %s: no [containerd] address configured: %w", id, errdefs.ErrFailedPrecondition)
	}
	cli, err := b.Client(ctx)
	if err != nil {
		return res, fmt.Errorf("delete-image %s: %w", id, err)
	}
	cctx := namespaces.WithNamespace(ctx, ns)
	if err := cli.ImageService().Delete(cctx, img.Ref, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
		return res, fmt.Errorf("delete-image %s: deleting containerd image %s: %w", id, img.Ref, err)
	}
	if len(shared) == 0 {
		// containerd's gc removes the base once no image references it;
		// remove it directly if a lease or a slow gc still holds it.
		sn := cli.SnapshotService(b.Snapshotter)
		if err := sn.Remove(cctx, img.ChainID); err != nil && !errdefs.IsNotFound(err) {
			return res, fmt.Errorf("delete-image %s: removing base snapshot %s from containerd: %w", id, img.ChainID, err)
		}
		for _, key := range bases {
			err := b.removeBase(ctx, key)
			if errors.Is(err, errBaseInUse) {
				log.G(ctx).Warnf("delete-image %s: base snapshot %s kept: a containerd namespace still uses it", id, key)
				res.Kept = append(res.Kept, key)
				continue
			}
			if err != nil {
				return res, fmt.Errorf("delete-image %s: %w", id, err)
			}
			res.Snapshots = append(res.Snapshots, key)
		}
	} else {
		log.G(ctx).Infof("delete-image %s: base %s kept, images %v use it", id, img.ChainID, shared)
	}
	err = b.Store.Update(func(tx *metadata.Tx) error {
		if err := tx.DeleteImage(id); err != nil {
			return err
		}
		// process-image skips a source whose run is done; after the
		// image is gone, importing it again must start a new run.
		if r, err := tx.Run(img.RunID); err == nil && r.State == metadata.RunDone {
			r.State, r.Error = metadata.RunFailed, "image deleted by delete-image"
			return tx.PutRun(r)
		}
		return nil
	})
	return res, err
}

var errBaseInUse = errors.New("a containerd namespace still uses it")

// removeBase waits briefly for containerd's gc to remove our snapshot
// key, then removes it itself.
func (b ImageDeleter) removeBase(ctx context.Context, key string) error {
	gone := func() bool {
		var err error
		b.Store.View(func(tx *metadata.Tx) error { _, err = tx.Snapshot(key); return nil })
		return errdefs.IsNotFound(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !gone() && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	if gone() {
		return nil
	}
	// containerd's gc did not remove it: a lease, a slow gc, or another
	// namespace that adopted the layer (containerd keeps a backend
	// snapshot any namespace uses). Only the first two are ours to undo.
	used, err := gc.UsedByContainerd(ctx, b.References, key)
	if err != nil {
		return fmt.Errorf("base snapshot %s kept: could not ask containerd whether a namespace still uses it: %w", key, err)
	}
	if used {
		return errBaseInUse
	}
	err = b.Remove(ctx, key)
	if err != nil && (errdefs.IsNotFound(err) || gone()) {
		return nil
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("removing base snapshot %s: %w", key, err)
	}
	return err
}
