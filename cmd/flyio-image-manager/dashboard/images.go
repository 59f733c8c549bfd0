package dashboard

import (
	"fmt"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// imageState is what the Images view says about an S3 object.
type imageState int

const (
	stateNotImported imageState = iota
	stateRequested              // Enter pressed, the daemon has not answered yet
	stateImporting
	stateReady
	stateFailed
	stateCancelled
	// stateDeleted is a version imported once whose image was deleted
	// since (delete-image): the run says done but nothing is there.
	stateDeleted
)

// imageRow is one S3 object and the run (if any) that imported this
// version of it.
type imageRow struct {
	obj   s3fetch.ObjectInfo
	state imageState
	run   admin.Run // set unless stateNotImported/stateRequested
}

// label is the STATE column: "not imported", "importing 42%", "ready",
// "failed".
func (r imageRow) label() string {
	switch r.state {
	case stateRequested:
		return "requested"
	case stateImporting:
		return fmt.Sprintf("importing %d%%", percent(r.run.CompressedBytes, r.run.Size))
	case stateReady:
		return "ready"
	case stateFailed:
		return "failed"
	case stateCancelled:
		return "cancelled"
	case stateDeleted:
		return "deleted"
	default:
		return "not imported"
	}
}

// imageRows matches S3 objects to runs by key and ETag, as list-images
// does: a run of an older version of a key says nothing about the object
// there now. When a version was imported more than once, the newest run
// counts. imported, when known (nil otherwise), is the set of key+ETag
// the daemon has an image of, so a done run of a deleted image is not
// shown as ready.
func imageRows(objs []s3fetch.ObjectInfo, runs []admin.Run, imported map[string]bool, requested map[string]bool) []imageRow {
	latest := make(map[string]admin.Run, len(runs))
	for _, r := range runs {
		k := r.Key + "\x00" + r.ETag
		if prev, ok := latest[k]; !ok || r.Created.After(prev.Created) {
			latest[k] = r
		}
	}
	rows := make([]imageRow, len(objs))
	for i, o := range objs {
		row := imageRow{obj: o}
		if r, ok := latest[o.Key+"\x00"+o.ETag]; ok {
			row.run = r
			switch {
			case r.State == admin.RunDone && imported != nil && !imported[o.Key+"\x00"+o.ETag]:
				row.state = stateDeleted
			case r.State == admin.RunDone:
				row.state = stateReady
			case r.State == admin.RunCancelled:
				row.state = stateCancelled
			case r.State.Finished():
				row.state = stateFailed
			default:
				row.state = stateImporting
			}
		}
		if requested[o.Key] && !row.busy() {
			row.state = stateRequested
		}
		rows[i] = row
	}
	return rows
}

// percent is part of whole in whole percent, clamped to 0..100.
func percent(part, whole int64) int {
	if whole <= 0 || part <= 0 {
		return 0
	}
	if part >= whole {
		return 100
	}
	return int(part * 100 / whole)
}

// busy reports whether the image is imported or on its way, so Enter
// does not ask for it again.
func (r imageRow) busy() bool {
	return r.state == stateRequested || r.state == stateImporting || r.state == stateReady
}
