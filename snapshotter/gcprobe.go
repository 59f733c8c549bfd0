package snapshotter

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// listDMNames lists the host's dm devices; where it fails (no
// device-mapper: unit tests on a fake pool) ListActive alone decides.
var listDMNames = dmpool.ListDevices

// probeName is the dm device ConfirmMissing loads a table for thin id on.
func probeName(pool string, id uint32) string { return fmt.Sprintf("%s-gcprobe-%d", pool, id) }

// Probes lists the gc probe devices of this pool that are active. A
// probe lives for the two ioctls of ConfirmMissing; one seen later was
// left by a gc killed in between (or one whose removal failed). It maps
// a thin id that gc judged possibly missing, and keeps that id from
// being deleted while it exists. Only devices whose table is a thin
// target of this pool and whose name is the probe name of the thin id
// they map are listed. A pool whose lister is not known (unit tests'
// fake) has none.
func (s *Snapshotter) Probes(ctx context.Context) ([]dmpool.ActiveDevice, error) {
	l, ok := s.pool.(activeLister)
	if !ok {
		return nil, nil
	}
	// One ioctl lists the names; the table of every device (what
	// ListActive reads) is only read when a name looks like a probe:
	// status, which calls this, runs often on nodes with many devices.
	if names, err := listDMNames(); err == nil {
		prefix := s.pool.Name() + "-gcprobe-"
		if !slices.ContainsFunc(names, func(n dmpool.DeviceName) bool { return strings.HasPrefix(n.Name, prefix) }) {
			return nil, nil
		}
	}
	active, err := l.ListActive(ctx)
	if err != nil {
		return nil, err
	}
	var out []dmpool.ActiveDevice
	for _, a := range active {
		if a.Name == probeName(s.pool.Name(), a.ID) {
			out = append(out, a)
		}
	}
	return out, nil
}

// removeLeftoverProbes removes, at start, the probe devices a killed gc
// left. Removing one only drops a second mapping of its thin id (the
// data is the thin id's, not the probe's), and only an unused one is
// removed: an open probe (someone opened the dm node) is kept and stays
// listed by Probes and `status`.
func (s *Snapshotter) removeLeftoverProbes(ctx context.Context) {
	probes, err := s.Probes(ctx)
	if err != nil {
		log.G(ctx).WithError(err).Warn("listing leftover gc probe devices")
		return
	}
	for _, p := range probes {
		if p.OpenCount > 0 {
			log.G(ctx).Warnf("gc probe device %s (thin id %d), left by a gc that died, is open (%d); kept", p.Name, p.ID, p.OpenCount)
			continue
		}
		if err := s.pool.Deactivate(ctx, p.Name); err != nil {
			log.G(ctx).WithError(err).Warnf("removing gc probe device %s (thin id %d), left by a gc that died", p.Name, p.ID)
			continue
		}
		log.G(ctx).Warnf("removed gc probe device %s (thin id %d), left by a gc that died", p.Name, p.ID)
	}
}
