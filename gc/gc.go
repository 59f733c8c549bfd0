// Package gc finds what the pool and the metadata hold that nothing uses
// any more, and removes it: the operator's `flyio-image-manager gc`.
//
// Plan only reads. It reads our metadata first and the thin ids in the
// pool after (from a metadata snapshot it reserves itself,
// dmpool/thinmeta, never one somebody else holds): Prepare records a
// device before it creates it and marks it ready only after, so every
// record Plan judges is older than its view of the pool, and a snapshot
// created meanwhile never looks like a record without device. An id in
// the pool that the first read did not record is checked against the
// records once more before it is reported. Apply removes a plan's items
// through the snapshotter's own methods, whose metadata transactions
// re-check each item, so it is safe beside a running daemon's Prepare and
// Remove; a record without device is removed only once the live pool
// confirms the device is gone, and a snapshot containerd does not know
// only if, asked again, none of its namespaces uses it. The daemon runs
// it itself (POST /v1/gc); the command does it offline only when no
// daemon answers.
package gc

import (
	"time"
)

// Kind is why an item can be cleaned.
type Kind string

const (
	// KindUnknownDevice: a thin id in the pool that no record names.
	KindUnknownDevice Kind = "device-without-record"
	// KindMissingDevice: a ready device record (a snapshot's or a
	// template's) whose thin id is not in the pool.
	KindMissingDevice Kind = "record-without-device"
	// KindOrphaned: a device whose creation failed part-way.
	KindOrphaned Kind = "orphaned"
	// KindQuarantined: a device whose record could not be reconciled.
	KindQuarantined Kind = "quarantined"
	// KindDeleting: a removed snapshot's device Cleanup has not deleted yet.
	KindDeleting Kind = "deleting"
	// KindFailedImport: the flyio-import-<run> snapshot of a
	// process-image run that failed or was abandoned.
	KindFailedImport Kind = "failed-import"
	// KindRemoteFill: a remote-fill/* snapshot a layer fill left behind.
	KindRemoteFill Kind = "remote-fill"
	// KindUnreferenced: a snapshot containerd has no record of.
	KindUnreferenced Kind = "unreferenced"
)

// Item is one thing gc can clean.
type Item struct {
	Kind Kind `json:"kind"`
	// DeviceID is the thin id (0 for a snapshot whose record names none).
	DeviceID uint32 `json:"device_id"`
	// Snapshot is our snapshot key (containerd's backend key) when the
	// item is a snapshot; Template the template name for a template.
	Snapshot string `json:"snapshot,omitempty"`
	Template string `json:"template,omitempty"`
	// InPool says whether the thin id exists in the pool; Bytes is what
	// it maps (data blocks × block size, read from the pool metadata, so
	// inactive devices are measured too). Blocks shared with other
	// devices count for each of them.
	InPool bool   `json:"in_pool"`
	Bytes  uint64 `json:"bytes"`
	Detail string `json:"detail,omitempty"`
	// Blocked is why the item is listed but will not be removed (e.g. a
	// snapshot that live snapshots depend on).
	Blocked string `json:"blocked,omitempty"`

	// Namespace and Name are containerd's record of a failed import's
	// snapshot, removed from containerd first.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// depth is the number of ancestors of a snapshot; children go first.
	Depth int `json:"-"`

	// Removed and Error are set by Apply.
	Removed bool   `json:"removed,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Report is a plan, and after Apply its outcome.
type Report struct {
	Pool   string `json:"pool"`
	DryRun bool   `json:"dry_run"`
	// Containerd says whether unreferenced snapshots were looked for.
	Containerd string `json:"containerd"`
	// MinAge is how old a snapshot must be before it counts as a
	// leftover: containerd records a snapshot only after our Prepare
	// returns, so a younger one may be in the middle of being created.
	MinAge     Duration `json:"min_age"`
	Items      []Item   `json:"items"`
	TotalBytes uint64   `json:"total_bytes"`
	Removed    int      `json:"removed"`
	Failed     int      `json:"failed"`
}

// Duration marshals as a Go duration string.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// DefaultMinAge is the age below which snapshots are never reported.
const DefaultMinAge = 5 * time.Minute
