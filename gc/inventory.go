package gc

import (
	"context"
	"sort"
	"strconv"
	"strings"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// Inventory lists the imported images and the snapshot tree of a
// metadata store and its pool: what gc judges, seen whole. It lives with
// gc because it reads the same records the same way (BaseSnapshots,
// Dependents, the pool metadata's mapped blocks). The daemon serves it on
// the admin API; diag uses it on the database opened read-only when no
// daemon runs.
type Inventory struct {
	Store *metadata.Store
	Pool  string
	// Namespace is [containerd] namespace, where imported bases live.
	Namespace string
	// Usage reads how much each device maps.
	Usage func(ctx context.Context) DeviceUsage
}

// Images lists the images process-image imported, each with its run's
// sizes, its base device and the snapshots built on it.
func (inv Inventory) Images(ctx context.Context) ([]ImageInfo, error) {
	ns := inv.Namespace
	out := []ImageInfo{}
	err := inv.Store.View(func(tx *metadata.Tx) error {
		imgs, err := tx.Images()
		if err != nil {
			return err
		}
		for _, img := range imgs {
			info := ImageInfo{
				ID: img.ID, Ref: img.Ref, Bucket: img.Bucket, Key: img.Key, ETag: img.ETag, RunID: img.RunID,
				ChainID: img.ChainID, Created: img.Created, Usage: -1, Dependants: []string{},
			}
			if r, err := tx.Run(img.RunID); err == nil {
				info.Digest, info.DiffID = r.Digest, r.DiffID
				info.Size, info.CompressedSize, info.Entries = r.Bytes, r.CompressedBytes, r.Entries
			}
			bases, err := BaseSnapshots(tx, ns, img.ChainID)
			if err != nil {
				return err
			}
			if len(bases) > 0 {
				info.BaseSnapshot = bases[0]
				if s, err := tx.Snapshot(bases[0]); err == nil {
					info.DeviceID, info.DeviceName = s.DeviceID, snapshotter.DeviceName(inv.Pool, s.DeviceID)
				}
			}
			if deps := Dependents(tx, bases); len(deps) > 0 {
				info.Dependants = deps
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	u := inv.Usage(ctx)
	for i := range out {
		if out[i].DeviceName != "" {
			out[i].Usage = u.of(out[i].DeviceID, 0)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Snapshots returns the snapshot forest and the devices no snapshot owns.
func (inv Inventory) Snapshots(ctx context.Context) (SnapshotTree, error) {
	var (
		snaps   []*metadata.Snapshot
		devices []*metadata.Device
		tpls    = map[uint32]*metadata.Template{}
	)
	err := inv.Store.View(func(tx *metadata.Tx) error {
		if err := tx.Snapshots(func(_ string, s *metadata.Snapshot, err error) error {
			if err == nil {
				snaps = append(snaps, s)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil {
				devices = append(devices, d)
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Templates(func(t *metadata.Template) error { tpls[t.DeviceID] = t; return nil })
	})
	if err != nil {
		return SnapshotTree{}, err
	}
	u := inv.Usage(ctx)
	tree := SnapshotTree{Pool: inv.Pool, UsageSource: u.Source, UsageError: u.Err}
	name := func(id uint32) string { return snapshotter.DeviceName(inv.Pool, id) }
	tree.Roots = BuildTree(snaps, name, u)
	tree.Devices = OtherDevices(devices, tpls, name, u)
	return tree, nil
}

// DeviceUsage says how much data each thin device maps, and which are active.
type DeviceUsage struct {
	// Mapped is bytes by thin id; nil when the pool metadata could not be
	// read (then only active devices have a figure).
	Mapped map[uint32]int64
	Active map[uint32]bool
	// Source says where the figures come from ("pool metadata", "thin
	// status", ...); Err why a better source could not be read.
	Source string
	Err    string
}

// of is the usage of thin id: from the pool metadata, else from the
// active device's status (fallback), else recorded (what Commit stored),
// else -1 (unknown).
func (u DeviceUsage) of(id uint32, recorded int64) int64 {
	if v, ok := u.Mapped[id]; ok {
		return v
	}
	if recorded > 0 {
		return recorded
	}
	return -1
}

// LiveUsage reads every device's mapped data from a metadata snapshot of
// the pool (readMeta); when that fails (the daemon's says so while a gc,
// which reads one too, runs) it asks each active device instead.
func LiveUsage(ctx context.Context, pool *dmpool.Pool, readMeta func(ctx context.Context) (*thinmeta.Metadata, error)) DeviceUsage {
	u := DeviceUsage{Active: map[uint32]bool{}}
	active, err := pool.ListActive(ctx)
	if err != nil {
		u.Err = err.Error()
	}
	for _, a := range active {
		u.Active[a.ID] = true
	}
	md, err := readMeta(ctx)
	if err == nil {
		u.Mapped, u.Source = mappedBytes(md), "pool metadata"
		return u
	}
	u.Err = err.Error()
	u.Mapped, u.Source = map[uint32]int64{}, "thin status"
	for _, a := range active {
		if st, err := pool.ThinStatus(ctx, a.Name); err == nil {
			u.Mapped[a.ID] = int64(st.MappedBytes)
		}
	}
	return u
}

// OfflineUsage reads usage with no daemon running, from a metadata
// snapshot of the pool. A device is active when a dm device of its name
// exists.
func OfflineUsage(pool string) func(ctx context.Context) DeviceUsage {
	return func(ctx context.Context) DeviceUsage {
		u := DeviceUsage{Active: map[uint32]bool{}}
		names, err := dmpool.ListDevices()
		if err != nil {
			u.Err = err.Error()
		}
		for _, n := range names {
			if id, ok := strings.CutPrefix(n.Name, pool+"-thin-"); ok {
				if v, err := strconv.ParseUint(id, 10, 32); err == nil {
					u.Active[uint32(v)] = true
				}
			}
		}
		md, err := thinmeta.ReadPool(ctx, pool)
		if err == nil {
			u.Mapped, u.Source = mappedBytes(md), "pool metadata"
			return u
		}
		// Without the pool metadata only recorded usage is known.
		u.Err, u.Source = err.Error(), "records (pool metadata unreadable)"
		return u
	}
}

func mappedBytes(md *thinmeta.Metadata) map[uint32]int64 {
	m := make(map[uint32]int64, len(md.Devices))
	for _, d := range md.Devices {
		m[d.ID] = int64(d.MappedBlocks * md.DataBlockSize)
	}
	return m
}

// BuildTree arranges snapshot records as a forest, like `ctr snapshots
// tree`: roots are the snapshots without a parent (or whose parent record
// is missing), children follow their parent, siblings in creation order.
func BuildTree(snaps []*metadata.Snapshot, devName func(uint32) string, u DeviceUsage) []*SnapshotNode {
	nodes := make(map[string]*SnapshotNode, len(snaps))
	for _, s := range snaps {
		n := &SnapshotNode{
			Key: s.Key, Parent: s.Parent, Kind: s.Kind.String(), State: string(s.State),
			DeviceID: s.DeviceID, DeviceName: devName(s.DeviceID), Active: u.Active[s.DeviceID],
			Size: s.Size, Usage: u.of(s.DeviceID, s.UsageBytes), FSType: s.FSType, Created: s.Created, Labels: s.Labels,
		}
		n.Namespace, n.Name = splitKey(s.Key)
		nodes[s.Key] = n
	}
	var roots []*SnapshotNode
	for _, s := range snaps {
		n := nodes[s.Key]
		if p, ok := nodes[s.Parent]; ok && s.Parent != "" {
			p.Children = append(p.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	order := func(ns []*SnapshotNode) {
		sort.SliceStable(ns, func(i, j int) bool {
			if !ns[i].Created.Equal(ns[j].Created) {
				return ns[i].Created.Before(ns[j].Created)
			}
			return ns[i].Key < ns[j].Key
		})
	}
	order(roots)
	for _, n := range nodes {
		order(n.Children)
	}
	if roots == nil {
		roots = []*SnapshotNode{}
	}
	return roots
}

// OtherDevices lists the device records that are not a snapshot's:
// templates, spares, and devices being created, deleted, orphaned or
// quarantined.
func OtherDevices(devices []*metadata.Device, tpls map[uint32]*metadata.Template, devName func(uint32) string, u DeviceUsage) []DeviceInfo {
	var out []DeviceInfo
	for _, d := range devices {
		if d.Role == metadata.RoleSnapshot && d.State == metadata.DeviceReady {
			continue
		}
		info := DeviceInfo{
			ID: d.ID, Name: devName(d.ID), Role: string(d.Role), State: string(d.State), Owner: d.Owner,
			Origin: d.Origin, Active: u.Active[d.ID], Size: d.Size, Usage: u.of(d.ID, 0), Created: d.Updated, Error: d.Error,
		}
		if t, ok := tpls[d.ID]; ok {
			info.Created = t.Created
		}
		out = append(out, info)
	}
	return out
}

// splitKey splits containerd's backend key "<ns>/<seq>/<name>"; other
// keys (our own, e.g. remote layer fills) have no namespace.
func splitKey(key string) (ns, name string) {
	n, rest, ok1 := strings.Cut(key, "/")
	seq, nm, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || n == "" || nm == "" {
		return "", ""
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return "", ""
	}
	return n, nm
}
