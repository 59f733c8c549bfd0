package service

import (
	"context"
	"fmt"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// SweepOrigins removes the lazily-backed origins nothing uses: no
// snapshot record names it (in any state), no lazy run holds it, and no
// live thin table of the pool reads from its device. Each origin is
// judged under the origins' lock, which attaching one takes too, so a
// run cannot attach it between the judgement and the removal. Anything
// that cannot be judged is kept and reported.
func (s *Service) SweepOrigins(ctx context.Context) (removed []string, err error) {
	if s.Origins == nil {
		return nil, nil
	}
	for _, o := range s.Origins.Status() {
		name := o.Name
		ok, err := s.Origins.RemoveIf(ctx, name, func(dev string) (bool, error) { return s.originUnused(ctx, name, dev) })
		if err != nil {
			log.G(ctx).WithError(err).Warnf("origin %s: kept", name)
			continue
		}
		if ok {
			log.G(ctx).Infof("origin %s: removed, nothing uses it", name)
			removed = append(removed, name)
		}
	}
	return removed, nil
}

// originUnused reports whether origin name, attached as dev ("" if it
// is not attached), is used by nothing. The checks go from what can
// start using it to what already does: a run that has not committed
// yet, then the records (a committed run's base, its children), then
// the kernel's live tables (a device being removed).
func (s *Service) originUnused(ctx context.Context, name, dev string) (bool, error) {
	if s.Importer != nil {
		busy := s.Importer.OriginsBusy()
		if busy[name] || busy["*"] {
			return false, nil
		}
	}
	used, err := s.Snapshotter.OriginsInUse()
	if err != nil {
		return false, err
	}
	if used[name] {
		return false, nil
	}
	if dev == "" {
		return true, nil
	}
	want, err := dmpool.OriginDevice(dev)
	if err != nil {
		return false, fmt.Errorf("origin %s: %w", name, err)
	}
	active, err := s.Pool.ListActive(ctx)
	if err != nil {
		return false, err
	}
	for _, a := range active {
		if a.Origin == want {
			return false, nil
		}
	}
	return true, nil
}
