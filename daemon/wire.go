package daemon

import (
	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/diag"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// The admin API's boundary: domain types (metadata records, dmpool,
// importer, gc, diag) become the API's wire types here and only here, so
// a storage or domain rename is a compile error in this file, not a
// silent change of the API.

// wireRun is a run record as the admin API shows it.
func wireRun(r metadata.Run) admin.Run {
	return admin.Run{
		ID: r.ID, Bucket: r.Bucket, Key: r.Key, ETag: r.ETag, ImageID: r.ImageID, Ref: r.Ref,
		State: admin.RunState(r.State), Error: r.Error,
		SnapshotKey: r.SnapshotKey, ChainID: r.ChainID, DiffID: r.DiffID, Digest: r.Digest,
		Size: r.Size, CompressedBytes: r.CompressedBytes, Bytes: r.Bytes, Entries: r.Entries,
		Created: r.Created, Updated: r.Updated,
	}
}

func wireRuns(rs []metadata.Run) []admin.Run {
	if rs == nil {
		return nil
	}
	out := make([]admin.Run, len(rs))
	for i, r := range rs {
		out[i] = wireRun(r)
	}
	return out
}

func wireImage(img metadata.Image) admin.Image {
	return admin.Image{ID: img.ID, Ref: img.Ref, ChainID: img.ChainID, RunID: img.RunID,
		Bucket: img.Bucket, Key: img.Key, ETag: img.ETag, Created: img.Created}
}

func importRequest(req admin.ProcessImageRequest) importer.Request {
	return importer.Request{Key: req.Key, ImageID: req.ImageID, Ref: req.Ref}
}

func wireQueues(qs []importer.QueueInfo) []admin.QueueInfo {
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

// WirePoolStatus is the pool's kernel status as the admin API shows it.
func WirePoolStatus(st dmpool.Status) admin.PoolStatus {
	return admin.PoolStatus{
		TransactionID: st.TransactionID, UsedMetaBlocks: st.UsedMetaBlocks, TotalMetaBlocks: st.TotalMetaBlocks,
		UsedDataBlocks: st.UsedDataBlocks, TotalDataBlocks: st.TotalDataBlocks, DataBlockSize: st.DataBlockSize,
		ReadOnly: st.ReadOnly, OutOfDataSpace: st.OutOfDataSpace, NeedsCheck: st.NeedsCheck,
		ErrorIfNoSpace: st.ErrorIfNoSpace, Fail: st.Fail, HeldMetadataRoot: st.HeldMetadataRoot, EventNr: st.EventNr,
	}
}

// WireGCReport is a gc report as the admin API shows it.
func WireGCReport(rep *gc.Report) admin.GCReport {
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

func wireDiagFiles(fs []diag.File) []admin.DiagFile {
	if fs == nil {
		return nil
	}
	out := make([]admin.DiagFile, len(fs))
	for i, f := range fs {
		out[i] = admin.DiagFile{Name: f.Name, Data: f.Data}
	}
	return out
}

// WireImages is the inventory's image list as the admin API shows it.
func WireImages(imgs []gc.ImageInfo) []admin.ImageInfo {
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

// WireSnapshotTree is the inventory's snapshot tree as the admin API
// shows it.
func WireSnapshotTree(t gc.SnapshotTree) admin.SnapshotTree {
	w := admin.SnapshotTree{Pool: t.Pool, UsageSource: t.UsageSource, UsageError: t.UsageError, Roots: wireNodes(t.Roots)}
	if t.Devices != nil {
		w.Devices = make([]admin.DeviceInfo, len(t.Devices))
		for i, d := range t.Devices {
			w.Devices[i] = admin.DeviceInfo{ID: d.ID, Name: d.Name, Role: d.Role, State: d.State, Owner: d.Owner,
				Origin: d.Origin, Active: d.Active, Size: d.Size, Usage: d.Usage, Created: d.Created, Error: d.Error}
		}
	}
	return w
}

func wireNodes(ns []*gc.SnapshotNode) []*admin.SnapshotNode {
	if ns == nil {
		return nil
	}
	out := make([]*admin.SnapshotNode, len(ns))
	for i, n := range ns {
		out[i] = &admin.SnapshotNode{
			Key: n.Key, Namespace: n.Namespace, Name: n.Name, Parent: n.Parent, Kind: n.Kind, State: n.State,
			DeviceID: n.DeviceID, DeviceName: n.DeviceName, Active: n.Active, Size: n.Size, Usage: n.Usage,
			FSType: n.FSType, Created: n.Created, Labels: n.Labels, Children: wireNodes(n.Children),
		}
	}
	return out
}

// wireDeletedImage is delete-image's answer (the zero result for a
// refusal before the image was found, as before).
func wireDeletedImage(d importer.DeletedImage) admin.DeleteImageResult {
	return admin.DeleteImageResult{Image: wireImage(d.Image), Snapshots: d.Snapshots, Kept: d.Kept}
}

// wirePoolTrouble is the trouble record as status shows it, with the
// count of active snapshots Commit would refuse.
func wirePoolTrouble(pt metadata.PoolTrouble, refused int) *admin.PoolTrouble {
	w := &admin.PoolTrouble{Generation: pt.Generation, LastReason: pt.Reason, RefusedAtCommit: refused}
	if !pt.At.IsZero() {
		at := pt.At
		w.LastAt = &at
	}
	return w
}

// wireLostWritesAccepted is accept-lost-writes' answer.
func wireLostWritesAccepted(a snapshotter.LostWritesAccepted) admin.AcceptLostWritesResult {
	return admin.AcceptLostWritesResult{Key: a.Key, From: a.From, To: a.To, PoolGeneration: a.Generation,
		StillRefused: a.StillRefused, Reasons: a.Reasons}
}
