package failpoint

import "slices"

// The failpoints. Each name is "<operation>/<where>"; the comment says what
// a crash there leaves behind and what start-up reconciliation makes of it.
// The crash-matrix test (test/crash) drives every one of them.
const (
	// Prepare (snapshotter/prepare.go).

	// PrepareAfterReserve: snapshot "creating", device "creating", op
	// journaled, no create_snap sent. Reconcile drops the snapshot and
	// orphans the (possibly non-existent) device.
	PrepareAfterReserve = "prepare/after-reserve"
	// PrepareAfterCreateSnap: the thin device exists in the pool, op step
	// not yet recorded. Reconcile orphans it.
	PrepareAfterCreateSnap = "prepare/after-create-snap"
	// PrepareAfterActivate: the device is active, the snapshot still
	// "creating". Reconcile orphans it (left active until gc).
	PrepareAfterActivate = "prepare/after-activate"

	// Commit (snapshotter/commit.go).

	// CommitAfterBegin: commit op journaled, device still active.
	CommitAfterBegin = "commit/after-begin"
	// CommitAfterDeactivate: the active snapshot's device is deactivated,
	// the rename not done. Reconcile ends the op and re-activates it: the
	// snapshot stays active and keeps its content.
	CommitAfterDeactivate = "commit/after-deactivate"
	// CommitBeforeRename: as above, after the look at the pool's trouble
	// (which may have recorded a bump), before the rename.
	CommitBeforeRename = "commit/before-rename"

	// Remove (snapshotter/remove.go).

	// RemoveAfterMark: the snapshot record is gone and its device marked
	// "deleting", still active in the pool (Remove's only step; the dm
	// work is the reaper's and Cleanup's). Reconcile's Cleanup deletes it.
	RemoveAfterMark = "remove/after-mark"
	// CleanupAfterDeactivate: the reaper or Cleanup deactivated a
	// "deleting" device, still in the pool. The next start's Cleanup
	// deletes it.
	CleanupAfterDeactivate = "cleanup/after-deactivate"
	// CleanupAfterDelete: the reaper or Cleanup deleted a "deleting"
	// device from the pool but did not forget its record yet. The next
	// start's Cleanup finds it gone and forgets it.
	CleanupAfterDelete = "cleanup/after-delete"

	// Template creation (snapshotter/template.go).

	// TemplateAfterReserve: template device "creating", op journaled.
	TemplateAfterReserve = "template/after-reserve"
	// TemplateAfterCreateThin: empty thin device in the pool.
	TemplateAfterCreateThin = "template/after-create-thin"
	// TemplateAfterMkfs: formatted, still active, not recorded.
	TemplateAfterMkfs = "template/after-mkfs"
	// TemplateAfterDeactivate: formatted and inactive, not recorded. All
	// four leave an orphaned device and no template; the next parentless
	// Prepare makes a new one.
	TemplateAfterDeactivate = "template/after-deactivate"
	// TemplateMounted: formatted ext4 template mounted under
	// root_dir/mounts to remove lost+found. The next start unmounts it
	// before reconcile, so the orphaned device is not busy.
	TemplateMounted = "template/mounted"

	// Remote layer fill (snapshotter/remote.go).

	// RemoteAfterPrepare: the fill snapshot "remote-fill/<ref>/<rand>" is
	// ready and empty.
	RemoteAfterPrepare = "remote/after-prepare"
	// RemoteAfterExtract: the layer is extracted, not yet committed.
	RemoteAfterExtract = "remote/after-extract"
	// RemoteMounted: the fill snapshot is mounted under root_dir/mounts,
	// nothing extracted. The next start unmounts it before reconcile.
	RemoteMounted = "remote/mounted"

	// Spare creation (snapshotter/spares.go), in the background refill.
	// SpareAfterCreateSnap: the spare's thin device exists, inactive,
	// recorded "creating". Reconcile orphans it.
	SpareAfterCreateSnap = "spare/after-create-snap"
	// SpareAfterActivate: the spare is active, still "creating".
	// Reconcile orphans it (left active until gc).
	SpareAfterActivate = "spare/after-activate"

	// process-image (importer/).

	// ImportAfterQueued: the run is persisted "queued", nothing else done.
	ImportAfterQueued = "import/after-queued"
	// ImportAfterDownloading: the run is "downloading", its snapshot key
	// recorded, no snapshot prepared yet.
	ImportAfterDownloading = "import/after-downloading"
	// ImportAfterPrepare: the import snapshot is prepared (empty).
	ImportAfterPrepare = "import/after-prepare"
	// ImportMidExtract: on the extractor's first progress report, with
	// part of the archive written to the mounted snapshot.
	ImportMidExtract = "import/mid-extract"
	// ImportMidBlockFill: a block fill has just journalled a chunk (the
	// device synced before): the run resumes from its journal, keeping
	// its snapshot, instead of starting over.
	ImportMidBlockFill = "import/mid-block-fill"
	// ImportAfterExtract: the archive is extracted and the snapshot
	// unmounted, the run not yet "committing".
	ImportAfterExtract = "import/after-extract"
	// ImportBeforeCommit: the run is "committing", the snapshot active.
	ImportBeforeCommit = "import/before-commit"
	// ImportAfterCommit: the base is committed, no image registered.
	ImportAfterCommit = "import/after-commit"
	// ImportAfterRegister: the containerd image exists, our image
	// record does not.
	ImportAfterRegister = "import/after-register"
	// ImportBeforeDone: our image record exists, the run is not "done".
	ImportBeforeDone = "import/before-done"
	// Every interrupted run is resumed at the next start: its snapshot is
	// removed and it starts over, but for a block fill's (above).
)

// All lists every failpoint, in the order an operation reaches them.
var All = []string{
	PrepareAfterReserve, PrepareAfterCreateSnap, PrepareAfterActivate,
	CommitAfterBegin, CommitAfterDeactivate, CommitBeforeRename,
	RemoveAfterMark, CleanupAfterDeactivate, CleanupAfterDelete,
	TemplateAfterReserve, TemplateAfterCreateThin, TemplateMounted, TemplateAfterMkfs, TemplateAfterDeactivate,
	RemoteAfterPrepare, RemoteMounted, RemoteAfterExtract,
	SpareAfterCreateSnap, SpareAfterActivate,
	ImportAfterQueued, ImportAfterDownloading, ImportAfterPrepare, ImportMidExtract, ImportMidBlockFill,
	ImportAfterExtract, ImportBeforeCommit, ImportAfterCommit, ImportAfterRegister, ImportBeforeDone,
}

// Known reports whether name is a failpoint.
func Known(name string) bool { return slices.Contains(All, name) }
