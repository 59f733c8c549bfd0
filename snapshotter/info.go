package snapshotter

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/filters"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/metadata"
)

// Stat returns the info of snapshot key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	var info snapshots.Info
	err := s.store.View(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot(key)
		if err != nil {
			return err
		}
		info = rec.Info()
		return nil
	})
	return info, err
}

// Update changes the labels of a snapshot: all of them, or only those
// named by "labels.<key>" field paths.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	var out snapshots.Info
	err := s.store.Update(func(tx *metadata.Tx) error {
		rec, err := tx.Snapshot(info.Name)
		if err != nil {
			return err
		}
		if len(fieldpaths) == 0 {
			rec.Labels = info.Labels
		}
		for _, path := range fieldpaths {
			switch {
			case path == "labels":
				rec.Labels = info.Labels
			case strings.HasPrefix(path, "labels."):
				if rec.Labels == nil {
					rec.Labels = map[string]string{}
				}
				// A named label absent from info is removed, as
				// containerd's own stores do.
				k := strings.TrimPrefix(path, "labels.")
				if v, ok := info.Labels[k]; ok && v != "" {
					rec.Labels[k] = v
				} else {
					delete(rec.Labels, k)
				}
			default:
				return fmt.Errorf("cannot update %q field on snapshot %q: %w", path, info.Name, errdefs.ErrInvalidArgument)
			}
		}
		// Info sets it; a client that sends back what Stat showed
		// must not store it.
		delete(rec.Labels, metadata.LabelBackendKey)
		rec.Updated = time.Now().UTC()
		if err := tx.PutSnapshot(rec); err != nil {
			return err
		}
		out = rec.Info()
		return nil
	})
	return out, err
}

// Walk calls fn for every snapshot that matches all of the filters.
// Snapshots still being created or removed are not shown.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, fs ...string) error {
	filter, err := filters.ParseAll(fs...)
	if err != nil {
		return err
	}
	unfiltered, adopting := walkFilters(fs)
	if unfiltered {
		// Clears the marks when the pool is full (unadopted.go).
		s.hideUnadopted(ctx)
	}
	if adopting {
		// The offer and a Remove that takes hidden layers along are
		// exclusive (unadopted.go); held until the offer is recorded,
		// not while fn runs (it may wait on a client that calls
		// Remove).
		s.adoptMu.Lock()
	}
	unlockAdopt := func() {
		if adopting {
			s.adoptMu.Unlock()
			adopting = false
		}
	}
	defer unlockAdopt()
	now := time.Now()
	var infos []snapshots.Info
	var offered []string
	err = s.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(_ string, rec *metadata.Snapshot, err error) error {
			if err != nil || rec.State != metadata.SnapshotReady {
				return nil
			}
			if s.fillSnapshotInFlight(rec.Key) {
				// containerd's GC removes the backend snapshots its
				// metadata does not name, and it runs while a fill goes
				// on in the background (remotefill.go): it must not see
				// the snapshot being filled.
				return nil
			}
			info := rec.Info()
			if !filter.Match(adaptInfo(info)) {
				return nil
			}
			if s.unadoptedLayer(rec.Key, now) {
				// For the same reason, nor the layer a background
				// fill committed, until a Prepare is offered it
				// (unadopted.go).
				if unfiltered {
					return nil
				}
				if adopting {
					offered = append(offered, rec.Key)
				}
			}
			infos = append(infos, info)
			return nil
		})
	})
	if err != nil {
		return err
	}
	if len(offered) > 0 {
		s.forgetUnadopted(offered...)
		log.G(ctx).Debugf("layers filled in the background offered for adoption: %v", offered)
	}
	unlockAdopt()
	// fn runs outside the transaction: it may call back into the
	// snapshotter (containerd's GC does).
	for _, info := range infos {
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// adaptInfo exposes the fields containerd's filter syntax can match,
// as core/snapshots/storage does.
func adaptInfo(info snapshots.Info) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 0 {
			return "", false
		}
		switch fieldpath[0] {
		case "kind":
			switch info.Kind {
			case snapshots.KindActive:
				return "active", true
			case snapshots.KindView:
				return "view", true
			case snapshots.KindCommitted:
				return "committed", true
			}
		case "name":
			return info.Name, true
		case "parent":
			return info.Parent, true
		case "labels":
			if len(info.Labels) == 0 {
				return "", false
			}
			v, ok := info.Labels[strings.Join(fieldpath[1:], ".")]
			return v, ok
		}
		return "", false
	})
}
