package gc

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/metadata"
)

// Collector removes things under the snapshotter's own rules;
// *snapshotter.Snapshotter implements it.
type Collector interface {
	Remove(ctx context.Context, key string) error
	CollectDevice(ctx context.Context, id uint32, states ...metadata.DeviceState) error
	CollectUnknownDevice(ctx context.Context, id uint32) error
	ForgetTemplate(ctx context.Context, name string, deviceID uint32) error
	// ConfirmMissing returns nil only when thin id is not in the live
	// pool now (asked of the pool itself, not of a metadata snapshot)
	// and, if snapshot is not "", that snapshot's record still names id.
	ConfirmMissing(ctx context.Context, snapshot string, id uint32) error
}

// Apply removes the report's items that are not blocked, in the order
// Plan put them: snapshots deepest first (children before parents), then
// device records and devices. Every removal re-checks its item in the
// metadata, so an item that came into use since Plan is refused, not
// removed. A record whose device the plan did not find is removed only
// once the live pool confirms the device is gone, and a snapshot
// containerd did not know only if, asked again, no namespace uses it.
// cd may be nil.
func Apply(ctx context.Context, rep *Report, c Collector, cd Containerd) {
	rep.DryRun = false
	var fresh *references
	var freshErr error
	for i := range rep.Items {
		it := &rep.Items[i]
		if it.Blocked != "" {
			continue
		}
		if it.Kind == KindUnreferenced {
			// containerd may have adopted the layer since the plan
			// read it (a pull in another namespace): ask again.
			if fresh == nil && freshErr == nil {
				fresh, freshErr = recheck(ctx, cd)
			}
			switch {
			case freshErr != nil:
				it.Blocked = fmt.Sprintf("not removed: containerd could not be asked again: %v", freshErr)
				continue
			case fresh.uses(it.Snapshot):
				it.Blocked = "containerd uses it now"
				continue
			}
		}
		if err := apply(ctx, it, c, cd); err != nil {
			it.Error = err.Error()
			rep.Failed++
			log.G(ctx).WithError(err).Warnf("gc: %s %s", it.Kind, it.What())
			continue
		}
		it.Removed = true
		rep.Removed++
		log.G(ctx).Infof("gc: removed %s %s (%d bytes mapped)", it.Kind, it.What(), it.Bytes)
	}
}

func apply(ctx context.Context, it *Item, c Collector, cd Containerd) error {
	switch {
	case it.Kind == KindMissingDevice:
		// The plan's view of the pool may be older than the record.
		err := c.ConfirmMissing(ctx, it.Snapshot, it.DeviceID)
		if errdefs.IsNotFound(err) {
			// The record went meanwhile (containerd's own gc removes a
			// backend key it does not know): nothing is left to remove.
			return nil
		}
		if err != nil {
			return fmt.Errorf("not removed: the live pool does not confirm device %d is gone: %w", it.DeviceID, err)
		}
		if it.Template != "" {
			return c.ForgetTemplate(ctx, it.Template, it.DeviceID)
		}
		if err := c.Remove(ctx, it.Snapshot); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	case it.Snapshot != "":
		if it.Name != "" && cd != nil {
			if err := cd.Remove(ctx, it.Namespace, it.Name); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("removing containerd's snapshot %q in namespace %q: %w", it.Name, it.Namespace, err)
			}
		}
		if err := c.Remove(ctx, it.Snapshot); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	case it.Template != "":
		return c.ForgetTemplate(ctx, it.Template, it.DeviceID)
	case it.Kind == KindUnknownDevice:
		return c.CollectUnknownDevice(ctx, it.DeviceID)
	case it.Kind == KindOrphaned:
		return c.CollectDevice(ctx, it.DeviceID, metadata.DeviceOrphaned, metadata.DeviceReady)
	case it.Kind == KindQuarantined:
		return c.CollectDevice(ctx, it.DeviceID, metadata.DeviceQuarantined)
	case it.Kind == KindDeleting:
		return c.CollectDevice(ctx, it.DeviceID, metadata.DeviceDeleting)
	}
	return fmt.Errorf("gc: no way to remove %s item %+v", it.Kind, *it)
}

func recheck(ctx context.Context, cd Containerd) (*references, error) {
	if cd == nil {
		return nil, fmt.Errorf("no containerd configured")
	}
	snaps, err := cd.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	return newReferences(snaps), nil
}

// What names the item for messages.
func (it *Item) What() string {
	switch {
	case it.Snapshot != "":
		return fmt.Sprintf("snapshot %q (device %d)", it.Snapshot, it.DeviceID)
	case it.Template != "":
		return fmt.Sprintf("template %q (device %d)", it.Template, it.DeviceID)
	}
	return fmt.Sprintf("device %d", it.DeviceID)
}
