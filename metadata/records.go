package metadata

import (
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// SnapshotState says whether a snapshot's device work has finished.
type SnapshotState string

const (
	// SnapshotCreating: the record is reserved, the device may not exist yet.
	SnapshotCreating SnapshotState = "creating"
	// SnapshotReady: the device exists and holds the snapshot.
	SnapshotReady SnapshotState = "ready"
	// SnapshotRemoving: Remove started; the device is being torn down.
	SnapshotRemoving SnapshotState = "removing"
)

// Snapshot is one containerd snapshot and the thin device behind it.
type Snapshot struct {
	Key     string            `json:"key"`
	Kind    snapshots.Kind    `json:"kind"`
	Parent  string            `json:"parent,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Created time.Time         `json:"created"`
	Updated time.Time         `json:"updated"`

	State    SnapshotState `json:"state"`
	DeviceID uint32        `json:"device_id"`
	// Size is the thin device's virtual size in bytes.
	Size uint64 `json:"size"`
	// FSType is the filesystem on the device ("ext4", "xfs").
	FSType string `json:"fs_type"`
	// UsageBytes is the device's mapped bytes, recorded at Commit so that
	// Usage of a committed snapshot needs no activation.
	UsageBytes int64 `json:"usage_bytes,omitempty"`
	// ExclusiveBytes is the committed device's data its origin (parent
	// or template) does not share, computed from the pool metadata at
	// the first Usage after Commit; nil until then.
	ExclusiveBytes *int64 `json:"exclusive_bytes,omitempty"`
	// TroubleGen is the pool trouble generation (PoolTrouble) when the
	// snapshot was prepared; Commit refuses an active snapshot whose
	// pool has had trouble since.
	TroubleGen uint64 `json:"trouble_gen,omitempty"`
	// LostWritesAccepted is set when an operator accepted that the
	// snapshot's writes may have been lost to pool trouble (snapshots
	// accept-lost-writes) so that it could be committed; a committed
	// snapshot keeps it, marking the layer for good.
	LostWritesAccepted *LostWritesAcceptance `json:"lost_writes_accepted,omitempty"`
	// ExternalOrigin names the lazily-backed origin (package lazy) the
	// device reads its unprovisioned blocks from: set on a base made by
	// process-image --lazy and inherited by every snapshot of it, so each
	// of their thin tables carries the same origin. Empty: none.
	ExternalOrigin string `json:"external_origin,omitempty"`
}

// LostWritesAcceptance is an operator's acceptance, for one snapshot, of
// the pool trouble of generations From+1..To: its TroubleGen was raised
// from From to To at At. Reasons are those troubles' reasons as recorded.
type LostWritesAcceptance struct {
	From    uint64    `json:"from"`
	To      uint64    `json:"to"`
	At      time.Time `json:"at"`
	Reasons []string  `json:"reasons,omitempty"`
}

// Info converts the record to containerd's snapshots.Info.
//
// The labels of a snapshot containerd's metadata made ("<ns>/<seq>/<name>")
// or a remote fill ("remote/<ref>") carry the key itself as
// LabelBackendKey: containerd shows our labels under its own names, so gc
// learns which of our snapshots each namespace uses (a layer one
// namespace made can be another's). Other keys (direct clients, the
// snapshotter test suite) get exactly the labels they set.
func (s *Snapshot) Info() snapshots.Info {
	labels := make(map[string]string, len(s.Labels))
	for k, v := range s.Labels {
		labels[k] = v
	}
	if containerdKey(s.Key) {
		labels[LabelBackendKey] = s.Key
	}
	return snapshots.Info{
		Kind:    s.Kind,
		Name:    s.Key,
		Parent:  s.Parent,
		Labels:  labels,
		Created: s.Created,
		Updated: s.Updated,
	}
}

// LabelBackendKey is the label Info sets to the snapshot's key. It is
// ours, never stored: Update drops it.
const LabelBackendKey = "flyio.io/backend-key"

// containerdKey reports whether key has the form of containerd's backend
// keys "<ns>/<seq>/<name>" (core/metadata/snapshot.go createKey) or of a
// remote fill, "remote/<ref>".
func containerdKey(key string) bool {
	if ref, ok := strings.CutPrefix(key, "remote/"); ok {
		return ref != ""
	}
	ns, rest, ok1 := strings.Cut(key, "/")
	seq, name, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || ns == "" || name == "" {
		return false
	}
	_, err := strconv.ParseUint(seq, 10, 64)
	return err == nil
}

// DeviceState is where a thin device is in its life.
type DeviceState string

const (
	// DeviceCreating: create_thin/create_snap was or is about to be sent;
	// the id may or may not exist in the pool.
	DeviceCreating DeviceState = "creating"
	// DeviceReady: the device exists and belongs to a snapshot or template.
	DeviceReady DeviceState = "ready"
	// DeviceDeleting: nothing refers to it any more; it is to be
	// deactivated and deleted from the pool.
	DeviceDeleting DeviceState = "deleting"
	// DeviceOrphaned: creation failed part-way. Following the fail-dumb
	// rule it is left alone until an operator runs gc.
	DeviceOrphaned DeviceState = "orphaned"
	// DeviceQuarantined: its record could not be understood or reconciled;
	// kept aside so one bad record never stops the daemon.
	DeviceQuarantined DeviceState = "quarantined"
)

// DeviceRole says what a device is for.
type DeviceRole string

const (
	RoleSnapshot DeviceRole = "snapshot"
	RoleTemplate DeviceRole = "template"
	// RoleSpare is an activated, empty snapshot of a template kept ready
	// so that a parentless Prepare only has to claim it.
	RoleSpare DeviceRole = "spare"
)

// Device is one thin id in the pool.
type Device struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	// Origin is the thin id this one was snapshotted from; 0 for create_thin.
	Origin uint32      `json:"origin,omitempty"`
	Size   uint64      `json:"size"`
	State  DeviceState `json:"state"`
	Role   DeviceRole  `json:"role"`
	// Owner is the snapshot key or template name using the device.
	Owner   string    `json:"owner"`
	Updated time.Time `json:"updated"`
	// Error is why the device was orphaned or quarantined.
	Error string `json:"error,omitempty"`
}

// Template is a pre-formatted empty filesystem that parentless snapshots
// are thin snapshots of, so Prepare never runs mkfs.
type Template struct {
	Name     string    `json:"name"`
	FSType   string    `json:"fs_type"`
	Size     uint64    `json:"size"`
	DeviceID uint32    `json:"device_id"`
	Created  time.Time `json:"created"`
}

// Op is the journal entry of one multi-step change in progress.
type Op struct {
	ID       uint64    `json:"id"`
	Type     string    `json:"type"`
	Key      string    `json:"key,omitempty"`
	DeviceID uint32    `json:"device_id,omitempty"`
	Steps    []string  `json:"steps,omitempty"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
}
