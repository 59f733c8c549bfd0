package main

import (
	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/diag"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
)

// The commands print the admin API's wire types with --json; the text
// output reuses the domain packages' formatters (gc's table, diag's
// bundle writer, the pool's mode), so the wire types are turned back into
// those here, for printing only.

func diagFiles(fs []admin.DiagFile) []diag.File {
	out := make([]diag.File, len(fs))
	for i, f := range fs {
		out[i] = diag.File{Name: f.Name, Data: f.Data}
	}
	return out
}

// gcReport is a wire report as gc's own, for its table.
func gcReport(w admin.GCReport) *gc.Report {
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

// poolStatus is a wire pool status as dmpool's, for the pool's lines of
// status.
func poolStatus(w admin.PoolStatus) dmpool.Status {
	return dmpool.Status{
		TransactionID: w.TransactionID, UsedMetaBlocks: w.UsedMetaBlocks, TotalMetaBlocks: w.TotalMetaBlocks,
		UsedDataBlocks: w.UsedDataBlocks, TotalDataBlocks: w.TotalDataBlocks, DataBlockSize: w.DataBlockSize,
		ReadOnly: w.ReadOnly, OutOfDataSpace: w.OutOfDataSpace, NeedsCheck: w.NeedsCheck,
		ErrorIfNoSpace: w.ErrorIfNoSpace, Fail: w.Fail, HeldMetadataRoot: w.HeldMetadataRoot, EventNr: w.EventNr,
	}
}
