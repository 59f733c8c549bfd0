package snapshotter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/internal/thinmeta"
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

// usageCache is the last pool read of exclusive usage.
type usageCache struct {
	// mu is held across a refresh: callers that find the figures stale
	// together wait for one read.
	mu     sync.Mutex
	at     time.Time
	err    error            // the last read's failure
	bytes  map[uint32]int64 // device id -> exclusive bytes, as of at
	asked  map[uint32]bool  // the devices the last read asked for
	maxAge time.Duration
	now    func() time.Time
}

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
// Commit, and kept in its record. An active snapshot's or a view's is at
// most usageMaxAge old; one pool read refreshes them all and fills in
// every committed snapshot still without a figure. When the pool's
// metadata cannot be read (a metadata snapshot held by someone else, a
// read error), Usage falls back to the device's mapped bytes, an upper
// bound that includes what it shares, and logs why; the next try is
// usageMaxAge later.
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
	if b, ok := s.exclusiveUsage(ctx, rec); ok {
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
// cache, refreshing it when it is stale or does not know the device
// (a snapshot newer than the last read). ok is false when the pool could
// not tell.
func (s *Snapshotter) exclusiveUsage(ctx context.Context, rec *metadata.Snapshot) (int64, bool) {
	c := &s.usage
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && c.now().Sub(c.at) < c.maxAge {
		if b, ok := c.bytes[rec.DeviceID]; ok {
			return b, true
		}
		// A failed read, or one that asked for this device and did not
		// find it in the pool: not again before maxAge.
		if c.err != nil || c.asked[rec.DeviceID] {
			return 0, false
		}
	}
	s.refreshUsage(ctx)
	b, ok := c.bytes[rec.DeviceID]
	return b, ok
}

// refreshUsage reads the exclusive usage of every ready active snapshot
// and view, and of committed snapshots without a recorded figure, in one
// pool read, and records the committed ones. c.mu is held.
func (s *Snapshotter) refreshUsage(ctx context.Context) {
	c := &s.usage
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
	c.at, c.err, c.bytes, c.asked = c.now(), err, nil, map[uint32]bool{}
	for _, p := range pairs {
		c.asked[p.Device] = true
	}
	if err != nil {
		log.G(ctx).WithError(err).Warnf("exclusive usage not known; reporting mapped bytes (parents' included) for %s", c.maxAge)
		return
	}
	c.bytes = make(map[uint32]int64, len(u.Devices))
	for id, e := range u.Devices {
		c.bytes[id] = int64(e.Blocks * u.DataBlockSize)
	}
	if len(committed) == 0 {
		return
	}
	err = s.store.Update(func(tx *metadata.Tx) error {
		for id, key := range committed {
			b, ok := c.bytes[id]
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
}
