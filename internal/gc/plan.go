package gc

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/internal/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
)

// PoolReader lists the thin devices in the pool (thinmeta.ReadPool).
type PoolReader func(ctx context.Context) (*thinmeta.Metadata, error)

// Options tune Plan.
type Options struct {
	// MinAge: snapshots younger than this are never leftovers. Zero
	// means DefaultMinAge; negative means no minimum (tests).
	MinAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Plan lists what can be cleaned. cd may be nil (no containerd
// configured): unreferenced snapshots are then not looked for.
func Plan(ctx context.Context, poolName string, readPool PoolReader, store *metadata.Store, cd Containerd, opts Options) (*Report, error) {
	if opts.MinAge == 0 {
		opts.MinAge = DefaultMinAge
	}
	if opts.MinAge < 0 {
		opts.MinAge = 0
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	rep := &Report{Pool: poolName, DryRun: true, MinAge: Duration(opts.MinAge), Items: []Item{}}

	// containerd first, then the pool, then our metadata: a snapshot is
	// recorded by us before containerd records it, and a device before it
	// is created, so whatever is missing from an earlier read but present
	// in a later one is new, and covered by MinAge or the read order.
	var refs map[string]map[string]snapshots.Info
	switch {
	case cd == nil:
		rep.Containerd = "not configured: unreferenced snapshots not checked"
	default:
		var err error
		if refs, err = cd.Snapshots(ctx); err != nil {
			refs = nil
			rep.Containerd = fmt.Sprintf("unreachable (%v): unreferenced snapshots not checked", err)
		} else {
			rep.Containerd = fmt.Sprintf("checked %d namespace(s)", len(refs))
		}
	}
	md, err := readPool(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the thin devices of pool %q: %w", poolName, err)
	}
	inPool := make(map[uint32]uint64, len(md.Devices))
	for _, d := range md.Devices {
		inPool[d.ID] = d.MappedBlocks * md.DataBlockSize
	}

	err = store.View(func(tx *metadata.Tx) error {
		p := &planner{rep: rep, tx: tx, inPool: inPool, refs: refs, now: now(), minAge: opts.MinAge,
			recs: map[string]*metadata.Snapshot{}, byDevice: map[uint32]string{}, runs: map[string]*metadata.Run{}}
		return p.plan()
	})
	if err != nil {
		return nil, err
	}
	for _, it := range rep.Items {
		if it.Blocked == "" {
			rep.TotalBytes += it.Bytes
		}
	}
	return rep, nil
}

type planner struct {
	rep      *Report
	tx       *metadata.Tx
	inPool   map[uint32]uint64
	refs     map[string]map[string]snapshots.Info
	now      time.Time
	minAge   time.Duration
	recs     map[string]*metadata.Snapshot
	byDevice map[uint32]string
	runs     map[string]*metadata.Run
}

func (p *planner) plan() error {
	if err := p.tx.Snapshots(func(key string, s *metadata.Snapshot, err error) error {
		if err == nil {
			p.recs[key] = s
			p.byDevice[s.DeviceID] = key
		}
		return nil
	}); err != nil {
		return err
	}
	templates := map[uint32]string{}
	if err := p.tx.Templates(func(tp *metadata.Template) error {
		templates[tp.DeviceID] = tp.Name
		return nil
	}); err != nil {
		return err
	}
	runs, err := p.tx.Runs()
	if err != nil {
		return err
	}
	for _, r := range runs {
		p.runs[r.ID] = r
	}

	// Device records against the pool.
	recorded := map[uint32]bool{}
	var devItems []Item
	if err := p.tx.Devices(func(id uint32, d *metadata.Device, err error) error {
		recorded[id] = true
		if err != nil {
			return nil // reconcile quarantines undecodable records
		}
		bytes, in := p.inPool[id]
		it := Item{DeviceID: id, InPool: in, Bytes: bytes, Detail: d.Error}
		switch d.State {
		case metadata.DeviceOrphaned:
			it.Kind = KindOrphaned
		case metadata.DeviceQuarantined:
			it.Kind = KindQuarantined
		case metadata.DeviceDeleting:
			it.Kind = KindDeleting
		case metadata.DeviceReady:
			// A spare is an empty snapshot kept ready for Prepare.
			used := p.byDevice[id] != "" || templates[id] != "" || d.Role == metadata.RoleSpare
			if in && used {
				return nil
			}
			if in {
				it.Kind = KindOrphaned
				it.Detail = fmt.Sprintf("record says ready for %q, but no snapshot or template uses it", d.Owner)
				break
			}
			it.Kind = KindMissingDevice
			switch {
			case templates[id] != "":
				it.Template = templates[id]
				it.Detail = fmt.Sprintf("template %q", templates[id])
			case p.byDevice[id] != "":
				it.Snapshot = p.byDevice[id]
				it.Depth = p.depth(it.Snapshot)
				it.Detail = fmt.Sprintf("snapshot %q", it.Snapshot)
			default:
				it.Detail = fmt.Sprintf("owner %q has no record", d.Owner)
				// Nothing but the record: forget it like an orphan.
				it.Kind = KindOrphaned
			}
		default:
			return nil // creating: a Prepare is under way
		}
		if it.Kind != KindMissingDevice {
			if user := p.byDevice[id]; user != "" {
				it.Blocked = fmt.Sprintf("snapshot %q uses it", user)
			} else if tp := templates[id]; tp != "" {
				it.Blocked = fmt.Sprintf("template %q uses it", tp)
			}
			if !in && it.Detail == "" {
				it.Detail = "not in the pool"
			} else if !in {
				it.Detail = "not in the pool; " + it.Detail
			}
		}
		devItems = append(devItems, it)
		return nil
	}); err != nil {
		return err
	}
	ids := make([]uint32, 0, len(p.inPool))
	for id := range p.inPool {
		if !recorded[id] && p.byDevice[id] == "" && templates[id] == "" {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		devItems = append(devItems, Item{Kind: KindUnknownDevice, DeviceID: id, InPool: true, Bytes: p.inPool[id],
			Detail: "in the pool, not in the metadata"})
	}

	snapItems := p.snapshots()
	for _, it := range devItems {
		if it.Kind == KindMissingDevice && it.Snapshot != "" {
			snapItems = append(snapItems, it)
		}
	}
	p.block(snapItems)
	sort.SliceStable(snapItems, func(i, j int) bool { return snapItems[i].Depth > snapItems[j].Depth })
	p.rep.Items = append(p.rep.Items, snapItems...)
	for _, it := range devItems {
		if !(it.Kind == KindMissingDevice && it.Snapshot != "") {
			p.rep.Items = append(p.rep.Items, it)
		}
	}
	return nil
}

// snapshots finds failed imports, remote-fill leftovers and snapshots
// containerd does not know.
func (p *planner) snapshots() []Item {
	var out []Item
	keys := make([]string, 0, len(p.recs))
	for k := range p.recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		s := p.recs[key]
		if s.State != metadata.SnapshotReady {
			continue
		}
		if _, in := p.inPool[s.DeviceID]; !in {
			continue // reported as record-without-device
		}
		old := p.now.Sub(latest(s.Created, s.Updated)) >= p.minAge
		it := Item{Snapshot: key, DeviceID: s.DeviceID, InPool: true, Bytes: p.inPool[s.DeviceID], Depth: p.depth(key)}
		ns, name, mapped := splitBackendKey(key)
		switch {
		case mapped && strings.HasPrefix(name, "flyio-import-"):
			runID := strings.TrimPrefix(name, "flyio-import-")
			r := p.runs[runID]
			switch {
			case r != nil && !r.State.Finished():
				continue // the run is using it
			case r != nil:
				it.Detail = fmt.Sprintf("run %s %s", runID, r.State)
				if r.Error != "" {
					it.Detail += ": " + r.Error
				}
			case !old:
				continue
			default:
				it.Detail = fmt.Sprintf("run %s has no record", runID)
			}
			it.Kind = KindFailedImport
			if _, ok := p.refs[ns][name]; ok {
				it.Namespace, it.Name = ns, name
			}
		case strings.HasPrefix(key, "remote-fill/"):
			if !old {
				continue
			}
			it.Kind = KindRemoteFill
			it.Detail = "interrupted remote layer fill"
		case p.refs == nil || !old:
			continue
		case mapped:
			if _, ok := p.refs[ns][name]; ok {
				continue
			}
			it.Kind = KindUnreferenced
			it.Detail = fmt.Sprintf("containerd namespace %q has no snapshot %q", ns, name)
		case strings.HasPrefix(key, "remote/"):
			ref := strings.TrimPrefix(key, "remote/")
			if p.referencedAnywhere(ref) {
				continue
			}
			it.Kind = KindUnreferenced
			it.Detail = fmt.Sprintf("no containerd snapshot carries %s=%s", snapshots.LabelSnapshotRef, ref)
		default:
			continue // a key we cannot map to containerd's: leave it
		}
		out = append(out, it)
	}
	return out
}

// referencedAnywhere reports whether any namespace has the committed
// snapshot of chain id ref: containerd names a remote fill by its target
// ref and keeps our "remote/<ref>" only as the backend key.
func (p *planner) referencedAnywhere(ref string) bool {
	for _, snaps := range p.refs {
		if _, ok := snaps[ref]; ok {
			return true
		}
		for _, info := range snaps {
			if info.Labels[snapshots.LabelSnapshotRef] == ref {
				return true
			}
		}
	}
	return false
}

// block marks snapshot items that other, live snapshots depend on: only
// a snapshot all of whose children go too can go. Repeated until nothing
// changes, since blocking a child blocks its parent.
func (p *planner) block(items []Item) {
	going := map[string]bool{}
	for _, it := range items {
		going[it.Snapshot] = true
	}
	for changed := true; changed; {
		changed = false
		for i := range items {
			it := &items[i]
			if it.Blocked != "" {
				continue
			}
			var live []string
			for _, kid := range p.tx.Children(it.Snapshot) {
				if !going[kid] {
					live = append(live, kid)
				}
			}
			if len(live) > 0 {
				it.Blocked = fmt.Sprintf("%d live snapshot(s) depend on it, e.g. %q", len(live), live[0])
				going[it.Snapshot] = false
				changed = true
			}
		}
	}
}

func (p *planner) depth(key string) int {
	n := 0
	for s := p.recs[key]; s != nil && s.Parent != "" && n < 1000; s = p.recs[s.Parent] {
		n++
	}
	return n
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// splitBackendKey splits containerd's backend key "<ns>/<seq>/<name>"
// (core/metadata/snapshot.go createKey) into namespace and name.
func splitBackendKey(key string) (ns, name string, ok bool) {
	ns, rest, ok1 := strings.Cut(key, "/")
	seq, name, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || ns == "" || name == "" {
		return "", "", false
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return "", "", false
	}
	return ns, name, true
}
