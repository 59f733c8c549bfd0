package snapshotter

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
)

// usageMaxAge is how old the exclusive usage of an active snapshot or a
// view may be. Its blocks change with every write, and a fresh figure
// costs a metadata snapshot of the pool (a pool commit) and a read of
// the mapping btrees; containerd's CRI plugin asks for the usage of every
// active snapshot every 10 s. One read answers for every snapshot at once,
// so a node makes at most one such read per usageMaxAge whatever its
// number of containers.
const usageMaxAge = 30 * time.Second

// exclusiveReader reads the exclusive usage of devices from the pool
// (thinmeta.ReadPoolExclusive); a fake in unit tests.
type exclusiveReader func(ctx context.Context, pairs []thinmeta.Pair) (*thinmeta.Usage, error)

// usageCache is the last good pool read of exclusive usage.
type usageCache struct {
	// sem (capacity 1) guards the fields below; it is held only to
	// look at or store them, never across a pool read, and waited for
	// with the caller's ctx.
	sem chan struct{}
	// refreshing is set while one caller reads the pool: the others
	// answer from the figures they have instead of waiting for it.
	refreshing bool
	at         time.Time        // the last read's start, good or not
	err        error            // the last read's failure
	bytes      map[uint32]int64 // device id -> exclusive bytes, last good read
	// forced: committed devices that made a read before maxAge, each at
	// most once between two good reads.
	forced map[uint32]bool
	maxAge time.Duration
	now    func() time.Time
}

func (c *usageCache) lock(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *usageCache) unlock() { <-c.sem }

// Usage reports the data the snapshot's device holds that its parent
// does not share: the blocks the device maps that its origin (the
// committed parent, or for a parentless snapshot the empty template)
// does not map to the same data block at the same offset, read from the
// pool's metadata (see thinmeta.ReadExclusive). That is what containerd's
// API promises (usage excluding parents) and what kubelet's
// image-filesystem figures add up; a device's mapped-block count would
// count every layer under it again.
//
// A committed snapshot's figure never changes (neither it nor its origin
// is written again): it is computed once, at the first Usage after
// Commit, and kept in its record. An active snapshot's or a view's comes
// from the last pool read; reads start at least usageMaxAge apart, one
// at a time, and a caller never waits for one another caller runs (nor
// for gc's: thinmeta.ReadPoolExclusive does not wait). One read answers
// for every snapshot and fills in every committed snapshot still without
// a figure. A snapshot no good read has seen (newer than the last read,
// or every read failed so far) gets its device's mapped bytes, an upper
// bound that includes what it shares; after a failed read the last good
// figures stay, stale, so that a figure does not jump to the mapped
// bytes with its parents'.
//
// Inodes is not reported (0): the pool knows blocks, not files, and
// counting them would mean mounting the device.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var rec *metadata.Snapshot
	err := s.store.View(func(tx *metadata.Tx) (err error) {
		rec, err = tx.Snapshot(key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, err
	}
	if rec.Kind == snapshots.KindCommitted && rec.ExclusiveBytes != nil {
		return snapshots.Usage{Size: *rec.ExclusiveBytes}, nil
	}
	if b, ok, err := s.exclusiveUsage(ctx, rec); err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage of %q: %w", key, err)
	} else if ok {
		return snapshots.Usage{Size: b}, nil
	}
	if rec.Kind == snapshots.KindCommitted {
		return snapshots.Usage{Size: rec.UsageBytes}, nil
	}
	st, err := s.pool.ThinStatus(ctx, s.deviceName(rec.DeviceID))
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage of %q: %w", key, err)
	}
	return snapshots.Usage{Size: int64(st.MappedBytes)}, nil
}

// exclusiveUsage returns the exclusive bytes of rec's device from the
// cache, refreshing it first when the last read is at least maxAge old
// and no other caller is reading. Reads are at least maxAge apart
// whatever happens: a device the last good read did not see (a snapshot
// newer than it) is not read for, ok is false and the caller reports its
// mapped bytes until the next read — except a committed one, whose first
// such Usage makes one read (CRI asks a committed snapshot once). After a
// failed read the last good figures are kept (stale, logged) so that a
// snapshot's usage does not jump to its mapped bytes with its parents'.
// err is ctx's only.
func (s *Snapshotter) exclusiveUsage(ctx context.Context, rec *metadata.Snapshot) (int64, bool, error) {
	c := &s.usage
	if err := c.lock(ctx); err != nil {
		return 0, false, err
	}
	b, ok := c.bytes[rec.DeviceID]
	recent := !c.at.IsZero() && c.now().Sub(c.at) < c.maxAge
	if recent && !ok && !c.refreshing && rec.Kind == snapshots.KindCommitted && !c.forced[rec.DeviceID] {
		// A committed snapshot newer than the last read: containerd's
		// CRI asks a committed snapshot's usage once and keeps the
		// answer, so its mapped bytes (its parents' included) would
		// stay in the image filesystem's figure for good. One read now,
		// once per such device; it records the figure for later calls.
		recent = false
		if c.forced == nil {
			c.forced = map[uint32]bool{}
		}
		c.forced[rec.DeviceID] = true
	}
	if c.refreshing || recent {
		c.unlock()
		return b, ok, nil
	}
	c.refreshing, c.at = true, c.now()
	c.unlock()
	bytes, err := s.refreshUsage(ctx)
	// Stored whatever ctx says: refreshing must be cleared.
	c.sem <- struct{}{}
	c.refreshing, c.err = false, err
	if err == nil {
		// Devices this read saw are answered from it; one it did not
		// see may force one more read.
		c.bytes, c.forced = bytes, nil
	} else if c.bytes != nil {
		log.G(ctx).WithError(err).Warnf("exclusive usage not read; reporting the figures of the read at most %s before, stale, until the next read in %s", c.maxAge, c.maxAge)
	} else {
		log.G(ctx).WithError(err).Warnf("exclusive usage not known; reporting mapped bytes (parents' included) until the next read in %s", c.maxAge)
	}
	b, ok = c.bytes[rec.DeviceID]
	c.unlock()
	return b, ok, nil
}

// refreshUsage reads the exclusive usage of every ready active snapshot
// and view, and of committed snapshots without a recorded figure, in one
// pool read, and records the committed ones. Called by one caller at a
// time (usageCache.refreshing), without the cache lock.
func (s *Snapshotter) refreshUsage(ctx context.Context) (map[uint32]int64, error) {
	var pairs []thinmeta.Pair
	committed := map[uint32]string{} // device id -> key, still to record
	err := s.store.View(func(tx *metadata.Tx) error {
		return tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err != nil || rec.State != metadata.SnapshotReady {
				return nil
			}
			if rec.Kind == snapshots.KindCommitted {
				if rec.ExclusiveBytes != nil {
					return nil
				}
				committed[rec.DeviceID] = key
			}
			p := thinmeta.Pair{Device: rec.DeviceID}
			if d, err := tx.Device(rec.DeviceID); err == nil && d.Origin != 0 {
				p.Origin, p.HasOrigin = d.Origin, true
			}
			pairs = append(pairs, p)
			return nil
		})
	})
	var u *thinmeta.Usage
	if err == nil {
		u, err = s.readExclusive(ctx, pairs)
	}
	if err != nil {
		return nil, err
	}
	bytes := make(map[uint32]int64, len(u.Devices))
	for id, e := range u.Devices {
		bytes[id] = int64(e.Blocks * u.DataBlockSize)
	}
	if len(committed) == 0 {
		return bytes, nil
	}
	err = s.store.Update(func(tx *metadata.Tx) error {
		for id, key := range committed {
			b, ok := bytes[id]
			if !ok {
				continue
			}
			rec, err := tx.Snapshot(key)
			// Recorded only on the record the read was for.
			if err != nil || rec.Kind != snapshots.KindCommitted || rec.DeviceID != id || rec.ExclusiveBytes != nil {
				continue
			}
			rec.ExclusiveBytes = &b
			if err := tx.PutSnapshot(rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.G(ctx).WithError(err).Warn("recording the exclusive usage of committed snapshots")
	}
	return bytes, nil
}
