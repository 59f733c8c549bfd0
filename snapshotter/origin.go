package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
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

// originNameRE is lazy.ValidateName's rule (1..64 of [a-z0-9-], not
// starting with '-'), which this package cannot import: checked before
// the name goes anywhere, and it must not refuse a name lazy makes.
var originNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

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
	if !originNameRE.MatchString(name) {
		return "", fmt.Errorf("label %s=%q: not an origin name: %w", LabelExternalOrigin, name, errdefs.ErrInvalidArgument)
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
	path, err := s.pool.ActivateWithOrigin(ctx, name, rec.DeviceID, rec.Size, dev)
	if !errors.Is(err, dmpool.ErrDeviceExists) {
		return path, err
	}
	log.G(ctx).Infof("device %s is live on an older device of origin %q; reloading it onto %s", name, rec.ExternalOrigin, dev)
	if err := s.pool.ReloadOrigin(ctx, name, dev); err != nil {
		return "", fmt.Errorf("device %s: moving to origin %q's device %s: %w", name, rec.ExternalOrigin, dev, err)
	}
	return s.pool.ActivateWithOrigin(ctx, name, rec.DeviceID, rec.Size, dev)
}

// SwitchOrigin reloads the table of every live device that reads from
// origin name onto newDev, which serves the same bytes (package lazy
// calls it when an origin's cache is complete, before it closes the
// served device). Records in every state count: a Prepare that has
// activated its device may not have recorded it ready yet. Devices
// activated meanwhile wait and get newDev: the
// caller has made it what DevicePath returns before calling. An error
// names the devices left on the old device; the caller keeps it.
func (s *Snapshotter) SwitchOrigin(ctx context.Context, name, newDev string) error {
	s.originMu.Lock()
	defer s.originMu.Unlock()
	var live []*metadata.Snapshot
	err := s.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err == nil && rec.ExternalOrigin == name && rec.Kind != snapshots.KindCommitted {
				live = append(live, rec)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, rec := range live {
		dname := s.deviceName(rec.DeviceID)
		err := s.pool.ReloadOrigin(ctx, dname, newDev)
		if errors.Is(err, dmpool.ErrNotFound) {
			continue // not live (being removed, or quarantined): activate gives it newDev
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s of snapshot %q: %w", dname, rec.Key, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("switching origin %q to %s: %w", name, newDev, err)
	}
	log.G(ctx).Infof("origin %q: %d live devices now read from %s", name, len(live), newDev)
	return nil
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
