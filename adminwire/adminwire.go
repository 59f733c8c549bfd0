// Package adminwire is the admin API's boundary: the domain types
// (metadata records, dmpool, snapshotter, importer, gc, diag) become admin's wire types
// here and only here, and the few wire values that go back into the domain
// (a request, a report for gc's table) come back here. Both sides use it:
// the daemon's Backend, and the commands that do the work themselves when
// no daemon runs (gc, status, diag), so their --json is the daemon's. A
// storage or domain rename is a compile error in this package, not a
// silent change of the API.
package adminwire

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/diag"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/lazy"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// Run is a run record as the admin API shows it.
func Run(r metadata.Run) admin.Run {
	return admin.Run{
		ID: r.ID, Bucket: r.Bucket, Key: r.Key, ETag: r.ETag, ImageID: r.ImageID, Ref: r.Ref,
		State: admin.RunState(r.State), Error: r.Error,
		SnapshotKey: r.SnapshotKey, ChainID: r.ChainID, DiffID: r.DiffID, Digest: r.Digest, Block: r.Block, Origin: r.Origin, Lazy: r.Lazy,
		Size: r.Size, CompressedBytes: r.CompressedBytes, Bytes: r.Bytes, Entries: r.Entries,
		Created: r.Created, Updated: r.Updated,
	}
}

// Runs is Run of each record.
func Runs(rs []metadata.Run) []admin.Run {
	if rs == nil {
		return nil
	}
	out := make([]admin.Run, len(rs))
	for i, r := range rs {
		out[i] = Run(r)
	}
	return out
}

// Image is an image record as the admin API shows it.
func Image(img metadata.Image) admin.Image {
	return admin.Image{ID: img.ID, Ref: img.Ref, ChainID: img.ChainID, RunID: img.RunID,
		Bucket: img.Bucket, Key: img.Key, ETag: img.ETag, Created: img.Created}
}

// ImportRequest is a process-image request as the importer takes it.
func ImportRequest(req admin.ProcessImageRequest) importer.Request {
	return importer.Request{Key: req.Key, ImageID: req.ImageID, Ref: req.Ref, FromBlock: req.FromBlock, Lazy: req.Lazy}
}

// PublishedBase is a publish-base outcome as the admin API shows it.
func PublishedBase(p importer.Published) admin.PublishBaseResult {
	s := p.Stats
	return admin.PublishBaseResult{Image: Image(p.Image), ManifestKey: p.ManifestKey,
		Chunks: s.Chunks, ZeroChunks: s.ZeroChunks, Uploaded: s.Uploaded, Reused: s.Reused,
		Bytes: s.Bytes, UploadedBytes: s.UploadedBytes}
}

// Queues is the importer's queues as the admin API shows them.
func Queues(qs []importer.QueueInfo) []admin.QueueInfo {
	if qs == nil {
		return nil
	}
	out := make([]admin.QueueInfo, len(qs))
	for i, q := range qs {
		w := admin.QueueInfo{Name: q.Name, Capacity: q.Capacity, Active: q.Active, Waiting: q.Waiting}
		if q.Runs != nil {
			w.Runs = make([]admin.QueuedRun, len(q.Runs))
			for j, r := range q.Runs {
				w.Runs[j] = admin.QueuedRun{ID: r.ID, Key: r.Key, State: admin.RunState(r.State), Position: r.Position}
			}
		}
		out[i] = w
	}
	return out
}

// PoolStatus is the pool's kernel status as the admin API shows it.
func PoolStatus(st dmpool.Status) admin.PoolStatus {
	return admin.PoolStatus{
		TransactionID: st.TransactionID, UsedMetaBlocks: st.UsedMetaBlocks, TotalMetaBlocks: st.TotalMetaBlocks,
		UsedDataBlocks: st.UsedDataBlocks, TotalDataBlocks: st.TotalDataBlocks, DataBlockSize: st.DataBlockSize,
		ReadOnly: st.ReadOnly, OutOfDataSpace: st.OutOfDataSpace, NeedsCheck: st.NeedsCheck,
		ErrorIfNoSpace: st.ErrorIfNoSpace, Fail: st.Fail, HeldMetadataRoot: st.HeldMetadataRoot, EventNr: st.EventNr,
	}
}

// GCReport is a gc report as the admin API shows it.
func GCReport(rep *gc.Report) admin.GCReport {
	if rep == nil {
		return admin.GCReport{}
	}
	w := admin.GCReport{Pool: rep.Pool, DryRun: rep.DryRun, Containerd: rep.Containerd, MinAge: rep.MinAge.String(),
		TotalBytes: rep.TotalBytes, Removed: rep.Removed, Failed: rep.Failed}
	if rep.Items != nil {
		w.Items = make([]admin.GCItem, len(rep.Items))
		for i, it := range rep.Items {
			w.Items[i] = admin.GCItem{Kind: string(it.Kind), DeviceID: it.DeviceID, Snapshot: it.Snapshot, Template: it.Template,
				InPool: it.InPool, Bytes: it.Bytes, Detail: it.Detail, Blocked: it.Blocked,
				Namespace: it.Namespace, Name: it.Name, Removed: it.Removed, Error: it.Error}
		}
	}
	return w
}

// DiagFiles is a diagnostics bundle's files as the admin API sends them.
func DiagFiles(fs []diag.File) []admin.DiagFile {
	if fs == nil {
		return nil
	}
	out := make([]admin.DiagFile, len(fs))
	for i, f := range fs {
		out[i] = admin.DiagFile{Name: f.Name, Data: f.Data}
	}
	return out
}

// Images is the inventory's image list as the admin API shows it.
func Images(imgs []gc.ImageInfo) []admin.ImageInfo {
	if imgs == nil {
		return nil
	}
	out := make([]admin.ImageInfo, len(imgs))
	for i, img := range imgs {
		out[i] = admin.ImageInfo{
			ID: img.ID, Ref: img.Ref, Bucket: img.Bucket, Key: img.Key, ETag: img.ETag, RunID: img.RunID,
			Digest: img.Digest, DiffID: img.DiffID, ChainID: img.ChainID,
			Size: img.Size, CompressedSize: img.CompressedSize, Entries: img.Entries,
			BaseSnapshot: img.BaseSnapshot, DeviceID: img.DeviceID, DeviceName: img.DeviceName,
			Usage: img.Usage, Dependants: img.Dependants, Created: img.Created,
		}
	}
	return out
}

// SnapshotTree is the inventory's snapshot tree as the admin API
// shows it.
func SnapshotTree(t gc.SnapshotTree) admin.SnapshotTree {
	w := admin.SnapshotTree{Pool: t.Pool, UsageSource: t.UsageSource, UsageError: t.UsageError, Roots: nodes(t.Roots)}
	if t.Devices != nil {
		w.Devices = make([]admin.DeviceInfo, len(t.Devices))
		for i, d := range t.Devices {
			w.Devices[i] = admin.DeviceInfo{ID: d.ID, Name: d.Name, Role: d.Role, State: d.State, Owner: d.Owner,
				Origin: d.Origin, Active: d.Active, Size: d.Size, Usage: d.Usage, Created: d.Created, Error: d.Error}
		}
	}
	return w
}

func nodes(ns []*gc.SnapshotNode) []*admin.SnapshotNode {
	if ns == nil {
		return nil
	}
	out := make([]*admin.SnapshotNode, len(ns))
	for i, n := range ns {
		out[i] = &admin.SnapshotNode{
			Key: n.Key, Namespace: n.Namespace, Name: n.Name, Parent: n.Parent, Kind: n.Kind, State: n.State,
			DeviceID: n.DeviceID, DeviceName: n.DeviceName, Active: n.Active, Size: n.Size, Usage: n.Usage,
			FSType: n.FSType, Created: n.Created, Labels: n.Labels, Children: nodes(n.Children),
		}
	}
	return out
}

// DeletedImage is delete-image's answer (the zero result for a
// refusal before the image was found, as before).
func DeletedImage(d importer.DeletedImage) admin.DeleteImageResult {
	return admin.DeleteImageResult{Image: Image(d.Image), Snapshots: d.Snapshots, Kept: d.Kept}
}

// GCOptions turns an admin request into gc options: MinAge is a Go
// duration, and "0s" means none at all (gc's zero is its default).
func GCOptions(req admin.GCRequest) (gc.Options, error) {
	opts := gc.Options{IncludeQuarantined: req.IncludeQuarantined}
	if req.MinAge != "" {
		d, err := time.ParseDuration(req.MinAge)
		if err != nil {
			return opts, fmt.Errorf("min age %q: %v: %w", req.MinAge, err, errdefs.ErrInvalidArgument)
		}
		if d == 0 {
			d = -1 // explicitly none
		}
		opts.MinAge = d
	}
	return opts, nil
}

// DomainGCReport is a wire report as gc's own, for gc's table (the
// commands print the daemon's answer with it).
func DomainGCReport(w admin.GCReport) *gc.Report {
	rep := &gc.Report{Pool: w.Pool, DryRun: w.DryRun, Containerd: w.Containerd,
		TotalBytes: w.TotalBytes, Removed: w.Removed, Failed: w.Failed}
	rep.MinAge.UnmarshalText([]byte(w.MinAge))
	for _, it := range w.Items {
		rep.Items = append(rep.Items, gc.Item{Kind: gc.Kind(it.Kind), DeviceID: it.DeviceID, Snapshot: it.Snapshot, Template: it.Template,
			InPool: it.InPool, Bytes: it.Bytes, Detail: it.Detail, Blocked: it.Blocked,
			Namespace: it.Namespace, Name: it.Name, Removed: it.Removed, Error: it.Error})
	}
	return rep
}

// DomainDiagFiles is the daemon's diagnostics files as diag's own, for
// the bundle writer.
func DomainDiagFiles(fs []admin.DiagFile) []diag.File {
	out := make([]diag.File, len(fs))
	for i, f := range fs {
		out[i] = diag.File{Name: f.Name, Data: f.Data}
	}
	return out
}

// PoolTrouble is the trouble record as status shows it, with the
// count of active snapshots Commit would refuse.
func PoolTrouble(pt metadata.PoolTrouble, refused int) *admin.PoolTrouble {
	w := &admin.PoolTrouble{Generation: pt.Generation, LastReason: pt.Reason, RefusedAtCommit: refused}
	if !pt.At.IsZero() {
		at := pt.At
		w.LastAt = &at
	}
	return w
}

// LostWritesAccepted is accept-lost-writes' answer.
func LostWritesAccepted(a snapshotter.LostWritesAccepted) admin.AcceptLostWritesResult {
	return admin.AcceptLostWritesResult{Key: a.Key, From: a.From, To: a.To, PoolGeneration: a.Generation,
		StillRefused: a.StillRefused, Reasons: a.Reasons}
}

// Origins are the lazily-backed origins as status shows them.
func Origins(st []lazy.OriginStatus) []admin.Origin {
	out := make([]admin.Origin, 0, len(st))
	for _, o := range st {
		w := admin.Origin{
			Name: o.Name, State: string(o.State), Device: o.DevicePath,
			ChunksPresent: o.ChunksPresent, ChunksTotal: o.ChunksTotal,
			BytesPresent: o.BytesPresent, BytesTotal: o.BytesTotal,
			OnDemandFetches: o.OnDemand, Prefetched: o.Prefetched,
			ReadErrors: o.ReadErrors, LastError: o.LastError,
		}
		if !o.LastErrorAt.IsZero() {
			at := o.LastErrorAt.UTC()
			w.LastErrorAt = &at
		}
		out = append(out, w)
	}
	return out
}
