package snapshotter

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/originname"
	"github.com/superfly/flyio-image-manager/metadata"
)

// LabelExternalOrigin asks a blank Prepare (LabelBlank) for a device
// with an external origin: the value names a lazily-backed origin that
// Config.Origins knows. The thin device starts empty and reads every
// block it has not written from the origin; every snapshot of it is
// activated with the same origin.
//
// The label is untrusted (any containerd client can set it): it is only
// taken on a blank Prepare and only for an origin attached now, and an
// origin holds a published image, never a tenant's writes.
const LabelExternalOrigin = "containerd.io/snapshot/flyio.external-origin"

// ExternalOrigins is where lazily-backed origins are attached (package
// lazy): the snapshotter asks it for the device to put in a thin table.
type ExternalOrigins interface {
	// DevicePath returns the block device that serves origin name now.
	DevicePath(name string) (string, error)
}

// externalOrigin returns the origin a new snapshot's device gets: the
// label's for a blank Prepare, "" otherwise (a child's comes from its
// parent, in origin).
func (s *Snapshotter) externalOrigin(blankFS string, labels map[string]string) (string, error) {
	name, ok := labels[LabelExternalOrigin]
	if !ok {
		return "", nil
	}
	if blankFS == "" {
		return "", fmt.Errorf("label %s: only a blank device (%s) can take an external origin: %w", LabelExternalOrigin, LabelBlank, errdefs.ErrInvalidArgument)
	}
	// lazy's own rule, checked before the name goes anywhere.
	if err := originname.Validate(name); err != nil {
		return "", fmt.Errorf("label %s: %w", LabelExternalOrigin, err)
	}
	if s.cfg.Origins == nil {
		return "", fmt.Errorf("label %s=%q: this daemon serves no external origins: %w", LabelExternalOrigin, name, errdefs.ErrFailedPrecondition)
	}
	if _, err := s.cfg.Origins.DevicePath(name); err != nil {
		return "", fmt.Errorf("label %s=%q: %w", LabelExternalOrigin, name, err)
	}
	return name, nil
}

// activate makes rec's device live with its thin table: with its
// external origin's current device when it has one. A device already
// live with another origin device (the origin was attached again after
// a restart, or switched to its local cache) has its table reloaded onto
// the current one.
func (s *Snapshotter) activate(ctx context.Context, rec *metadata.Snapshot) (string, error) {
	name := s.deviceName(rec.DeviceID)
	if rec.ExternalOrigin == "" {
		return s.pool.Activate(ctx, name, rec.DeviceID, rec.Size)
	}
	// Held across DevicePath and the table load: SwitchOrigin must not
	// miss a device activated with the device it is switching away from.
	s.originMu.RLock()
	defer s.originMu.RUnlock()
	if s.cfg.Origins == nil {
		// An offline command (gc --force): the device may be live from
		// the daemon, with its origin; it must never be activated
		// without one, which would read zeros for the image's blocks
		// and copy them into the device's first partial writes.
		if info, err := dmpool.GetDeviceInfo(name); err == nil && info.Exists && info.Active {
			return dmpool.DevicePath(name), nil
		}
		return "", fmt.Errorf("device %s reads from external origin %q, which only the daemon serves: %w", name, rec.ExternalOrigin, errdefs.ErrUnavailable)
	}
	dev, err := s.cfg.Origins.DevicePath(rec.ExternalOrigin)
	if err != nil {
		return "", fmt.Errorf("device %s: external origin %q: %w", name, rec.ExternalOrigin, err)
	}
	if err := checkOriginSize(name, rec.Size, dev); err != nil {
		return "", fmt.Errorf("external origin %q: %w", rec.ExternalOrigin, err)
	}
	path, err := s.pool.ActivateWithOrigin(ctx, name, rec.DeviceID, rec.Size, dev)
	if !errors.Is(err, dmpool.ErrDeviceExists) {
		return path, err
	}
	log.G(ctx).Infof("device %s is live on an older device of origin %q; reloading it onto %s", name, rec.ExternalOrigin, dev)
	if err := s.reloadOrigin(ctx, name, rec.Size, dev); err != nil {
		return "", fmt.Errorf("device %s: moving to origin %q's device %s: %w", name, rec.ExternalOrigin, dev, err)
	}
	return s.pool.ActivateWithOrigin(ctx, name, rec.DeviceID, rec.Size, dev)
}

// originDevice and originSize are dmpool's; unit tests replace them,
// their fake pool's origins being names, not device nodes.
var (
	originDevice = dmpool.OriginDevice
	originSize   = dmpool.OriginSize
)

// checkOriginSize refuses origin device dev for thin device name of
// size bytes unless dev has exactly that size: a lazily-backed base is
// made of its block image's size (importer's fillLazy) and its
// snapshots inherit it, so an origin of another size is not this
// image's (a dead nbd device, or an index reused for another image).
func checkOriginSize(name string, size uint64, dev string) error {
	got, err := originSize(dev)
	if err != nil {
		return fmt.Errorf("device %s: %w", name, err)
	}
	if got != size {
		return fmt.Errorf("device %s of %d bytes: origin device %s has %d bytes, not the image's %d: it does not serve this image; refusing to put it in the table: %w",
			name, size, dev, got, size, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// SwitchOrigin reloads the table of every live device that reads from
// origin name's device oldDev onto newDev, which serves the same bytes
// (package lazy calls it when an origin's cache is complete, before it
// closes the served device, and when a served device died, to move the
// tables onto a fresh one). Two sources name the devices: the records
// of origin name, in every state (a Prepare that has activated its
// device may not have recorded it ready yet), and the kernel's tables,
// which also show devices no record names any more (being removed by
// the reaper, left by a crash) but that would read oldDev until it
// closes, and then get EIO or, were its number reused, another image's
// bytes. A live device whose table names oldDev's number but whose
// record names another origin is never moved. Devices activated
// meanwhile wait and get newDev: the caller has made it what
// DevicePath returns before calling. An error (a reload failed, or a
// table still names oldDev afterwards) names the devices left on the
// old device; the caller keeps it.
func (s *Snapshotter) SwitchOrigin(ctx context.Context, name, oldDev, newDev string) error {
	s.originMu.Lock()
	defer s.originMu.Unlock()
	var live []*metadata.Snapshot
	owner := map[uint32]string{} // thin id -> the origin its record names
	err := s.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err != nil {
				return nil
			}
			owner[rec.DeviceID] = rec.ExternalOrigin
			if rec.ExternalOrigin == name && rec.Kind != snapshots.KindCommitted {
				live = append(live, rec)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var errs []error
	moved := 0
	for _, rec := range live {
		dname := s.deviceName(rec.DeviceID)
		err := s.reloadOrigin(ctx, dname, rec.Size, newDev)
		if errors.Is(err, dmpool.ErrNotFound) {
			continue // not live (being removed, or quarantined): activate gives it newDev
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s of snapshot %q: %w", dname, rec.Key, err))
			continue
		}
		moved++
	}
	if l, ok := s.pool.(activeLister); ok && oldDev != "" {
		n, err := s.moveStragglers(ctx, l, name, oldDev, newDev, owner)
		moved += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("switching origin %q from %s to %s: %w", name, oldDev, newDev, err)
	}
	log.G(ctx).Infof("origin %q: %d live devices now read from %s", name, moved, newDev)
	return nil
}

// moveStragglers reloads onto newDev every live thin device of the pool
// whose table still names oldDev's number, except those a record gives
// to another origin, and then checks that none is left on it.
func (s *Snapshotter) moveStragglers(ctx context.Context, l activeLister, name, oldDev, newDev string, owner map[uint32]string) (int, error) {
	old, err := originDevice(oldDev)
	if err != nil {
		return 0, fmt.Errorf("the old device: %w", err)
	}
	// The fresh device can have the old one's number (nbd reuses the
	// index of a dead device no table named): a table naming it reads
	// the new device already, and a reload would leave it "on" old.
	if cur, err := originDevice(newDev); err == nil && cur == old {
		return 0, nil
	}
	onOld := func() ([]dmpool.ActiveDevice, error) {
		active, err := l.ListActive(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing the live devices still on %s (%s): %w", oldDev, old, err)
		}
		var on []dmpool.ActiveDevice
		for _, a := range active {
			if o, ok := owner[a.ID]; a.Origin == old && (!ok || o == name) {
				on = append(on, a)
			}
		}
		return on, nil
	}
	on, err := onOld()
	if err != nil {
		return 0, err
	}
	var errs []error
	moved := 0
	for _, a := range on {
		if _, ok := owner[a.ID]; !ok {
			log.G(ctx).Warnf("device %s (thin %d) has no snapshot record but reads from origin %q's device %s: moving it to %s", a.Name, a.ID, name, oldDev, newDev)
		}
		err := s.reloadOrigin(ctx, a.Name, a.Size, newDev)
		if errors.Is(err, dmpool.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", a.Name, err))
			continue
		}
		moved++
	}
	if err := errors.Join(errs...); err != nil {
		return moved, err
	}
	left, err := onOld()
	if err != nil {
		return moved, err
	}
	if len(left) > 0 {
		names := make([]string, len(left))
		for i, a := range left {
			names[i] = a.Name
		}
		return moved, fmt.Errorf("devices %v still read from %s (%s) after the reloads: %w", names, oldDev, old, errdefs.ErrFailedPrecondition)
	}
	return moved, nil
}

// reloadOrigin is pool.ReloadOrigin of device name, of size bytes, onto
// origin dev, which must have that size.
func (s *Snapshotter) reloadOrigin(ctx context.Context, name string, size uint64, dev string) error {
	if err := checkOriginSize(name, size, dev); err != nil {
		return err
	}
	return s.pool.ReloadOrigin(ctx, name, dev)
}

// OriginsInUse returns the external origins some snapshot record names,
// in any state: an origin on this list must not be removed.
func (s *Snapshotter) OriginsInUse() (map[string]bool, error) {
	used := map[string]bool{}
	err := s.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err != nil {
				// An undecodable record might name any origin.
				return fmt.Errorf("snapshot record %q: %w", key, err)
			}
			if rec.ExternalOrigin != "" {
				used[rec.ExternalOrigin] = true
			}
			return nil
		})
	})
	return used, err
}
