package gc

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
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
	// IncludeQuarantined lets quarantined devices be removed; without
	// it they are listed, kept.
	IncludeQuarantined bool
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

	// containerd first, then our metadata, then the pool. containerd
	// records a snapshot only after our Prepare returned, so one of ours
	// it does not know yet is young and covered by MinAge. Our records
	// are read before the pool, and Prepare records a device before it
	// creates it and marks it ready only once created: every record the
	// plan judges is older than the pool view it is judged against, so a
	// snapshot created meanwhile is never "a record without device". A
	// device created after the records were read does look unrecorded;
	// CollectUnknownDevice re-checks the records before deleting it.
	var refs *references
	switch {
	case cd == nil:
		rep.Containerd = "not configured: unreferenced snapshots not checked"
	default:
		snaps, err := cd.Snapshots(ctx)
		if err != nil {
			rep.Containerd = fmt.Sprintf("unreachable (%v): unreferenced snapshots not checked", err)
		} else {
			refs = newReferences(snaps)
			rep.Containerd = fmt.Sprintf("checked %d namespace(s)", len(snaps))
		}
	}
	recs, err := loadRecords(store)
	if err != nil {
		return nil, err
	}
	md, err := readPool(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the thin devices of pool %q: %w", poolName, err)
	}
	inPool := make(map[uint32]uint64, len(md.Devices))
	for _, d := range md.Devices {
		inPool[d.ID] = d.MappedBlocks * md.DataBlockSize
	}

	// An id the records did not know may have been created since they
	// were read: its record is written before it is.
	if err := recs.recheckUnrecorded(store, inPool); err != nil {
		return nil, err
	}

	p := &planner{rep: rep, records: recs, inPool: inPool, refs: refs, now: now(), minAge: opts.MinAge,
		includeQuarantined: opts.IncludeQuarantined}
	p.plan()
	for _, it := range rep.Items {
		if it.Blocked == "" {
			rep.TotalBytes += it.Bytes
		}
	}
	return rep, nil
}

// records is a copy of the metadata gc judges, read in one transaction
// before the pool is read.
type records struct {
	snaps     map[string]*metadata.Snapshot
	children  map[string][]string
	byDevice  map[uint32]string
	devices   []deviceRecord // in id order
	templates map[uint32]string
	runs      map[string]*metadata.Run
	// recent are ids recorded after the records were read.
	recent map[uint32]bool
}

type deviceRecord struct {
	id uint32
	d  *metadata.Device // nil: undecodable (reconcile quarantines it)
}

// recheckUnrecorded adds to r.recent the ids of inPool that r has no
// record of but the metadata has now.
func (r *records) recheckUnrecorded(store *metadata.Store, inPool map[uint32]uint64) error {
	known := make(map[uint32]bool, len(r.devices))
	for _, d := range r.devices {
		known[d.id] = true
	}
	return store.View(func(tx *metadata.Tx) error {
		for id := range inPool {
			if known[id] || r.byDevice[id] != "" || r.templates[id] != "" {
				continue
			}
			if _, err := tx.Device(id); err == nil {
				r.recent[id] = true
			} else if !errdefs.IsNotFound(err) {
				r.recent[id] = true // undecodable: not unknown either
			}
		}
		return nil
	})
}

func loadRecords(store *metadata.Store) (*records, error) {
	r := &records{snaps: map[string]*metadata.Snapshot{}, children: map[string][]string{}, byDevice: map[uint32]string{},
		templates: map[uint32]string{}, runs: map[string]*metadata.Run{}, recent: map[uint32]bool{}}
	err := store.View(func(tx *metadata.Tx) error {
		if err := tx.Snapshots(func(key string, s *metadata.Snapshot, err error) error {
			if err == nil {
				r.snaps[key] = s
				r.byDevice[s.DeviceID] = key
			}
			return nil
		}); err != nil {
			return err
		}
		for key := range r.snaps {
			if kids := tx.Children(key); len(kids) > 0 {
				r.children[key] = kids
			}
		}
		if err := tx.Templates(func(tp *metadata.Template) error {
			r.templates[tp.DeviceID] = tp.Name
			return nil
		}); err != nil {
			return err
		}
		runs, err := tx.Runs()
		if err != nil {
			return err
		}
		for _, run := range runs {
			r.runs[run.ID] = run
		}
		return tx.Devices(func(id uint32, d *metadata.Device, err error) error {
			if err != nil {
				d = nil
			}
			r.devices = append(r.devices, deviceRecord{id: id, d: d})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

type planner struct {
	*records
	rep                *Report
	inPool             map[uint32]uint64
	refs               *references // nil: containerd not asked
	now                time.Time
	minAge             time.Duration
	includeQuarantined bool
}

func (p *planner) plan() {
	// Device records against the pool.
	recorded := map[uint32]bool{}
	var devItems []Item
	for _, rec := range p.devices {
		recorded[rec.id] = true
		if rec.d == nil {
			continue // reconcile quarantines undecodable records
		}
		if it, ok := p.device(rec.id, rec.d); ok {
			devItems = append(devItems, it)
		}
	}
	ids := make([]uint32, 0, len(p.inPool))
	for id := range p.inPool {
		if !recorded[id] && !p.recent[id] && p.byDevice[id] == "" && p.templates[id] == "" {
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
}

// device judges one device record against the pool; ok is false when
// there is nothing to report.
func (p *planner) device(id uint32, d *metadata.Device) (it Item, ok bool) {
	templates := p.templates
	bytes, in := p.inPool[id]
	it = Item{DeviceID: id, InPool: in, Bytes: bytes, Detail: d.Error}
	switch d.State {
	case metadata.DeviceOrphaned:
		it.Kind = KindOrphaned
	case metadata.DeviceQuarantined:
		// Set aside because something about it could not be checked:
		// its data may be recoverable, so only an explicit request
		// removes it.
		it.Kind = KindQuarantined
		if !p.includeQuarantined {
			it.Blocked = "quarantined (its data may be recoverable); gc --force --include-quarantined removes it"
		}
	case metadata.DeviceDeleting:
		it.Kind = KindDeleting
	case metadata.DeviceReady:
		// A spare is an empty snapshot kept ready for Prepare.
		used := p.byDevice[id] != "" || templates[id] != "" || d.Role == metadata.RoleSpare
		if in && used {
			return it, false
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
		return it, false // creating: a Prepare is under way
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
	return it, true
}

// snapshots finds failed imports, remote-fill leftovers and snapshots
// containerd does not know.
func (p *planner) snapshots() []Item {
	var out []Item
	keys := make([]string, 0, len(p.snaps))
	for k := range p.snaps {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		s := p.snaps[key]
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
			if p.refs.has(ns, name) {
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
		case mapped || strings.HasPrefix(key, "remote/"):
			// A committed layer made in one namespace is adopted by
			// others (a remote fill answering ErrAlreadyExists), so
			// its key's namespace says nothing about who uses it.
			if p.refs.uses(key) {
				continue
			}
			it.Kind = KindUnreferenced
			it.Detail = fmt.Sprintf("no snapshot in any of containerd's %d namespace(s) uses it", p.refs.namespaces())
		default:
			continue // a key we cannot map to containerd's: leave it
		}
		out = append(out, it)
	}
	return out
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
			for _, kid := range p.children[it.Snapshot] {
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
	for s := p.snaps[key]; s != nil && s.Parent != "" && n < 1000; s = p.snaps[s.Parent] {
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
