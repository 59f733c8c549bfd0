package gc

import "time"

// The inventory's types: the domain's view. The admin API has its own
// wire types of the same shape (admin.ImageInfo, admin.SnapshotTree),
// documented as a client reads them, and adminwire converts at the
// boundary.

// ImageInfo is one image process-image imported, with what it is made of
// and what is built on it.
type ImageInfo struct {
	ID      string
	Ref     string
	Bucket  string
	Key     string
	ETag    string
	RunID   string
	Digest  string
	DiffID  string
	ChainID string
	// Size is the uncompressed tar stream; CompressedSize what was read
	// from S3 (both from the import run, 0 when its record is gone).
	Size           int64
	CompressedSize int64
	Entries        int
	// BaseSnapshot is our snapshot key holding the chain id; DeviceID and
	// DeviceName its thin device (0 and "" when the base is gone).
	BaseSnapshot string
	DeviceID     uint32
	DeviceName   string
	// Usage is the data the base device maps, in bytes; -1 when unknown.
	Usage int64
	// Dependants are the snapshots (container layers, views) whose parent
	// chain reaches the base: delete-image refuses while there are any.
	Dependants []string
	Created    time.Time
}

// SnapshotTree is every snapshot as a forest (like `ctr snapshots tree`)
// plus the devices no snapshot owns: templates, spares, orphans.
type SnapshotTree struct {
	Pool string
	// UsageSource says where Usage figures come from: "pool metadata"
	// (a metadata snapshot of the pool: exact for every device), or
	// "thin status" (only active devices) when that could not be read.
	UsageSource string
	UsageError  string
	Roots       []*SnapshotNode
	Devices     []DeviceInfo
}

// SnapshotNode is one snapshot and its children.
type SnapshotNode struct {
	Key string
	// Namespace and Name split a containerd key "<ns>/<seq>/<name>".
	Namespace  string
	Name       string
	Parent     string
	Kind       string
	State      string
	DeviceID   uint32
	DeviceName string
	Active     bool
	Size       uint64
	Usage      int64
	FSType     string
	Created    time.Time
	Labels     map[string]string
	Children   []*SnapshotNode
}

// DeviceInfo is a thin device that is not a snapshot's.
type DeviceInfo struct {
	ID     uint32
	Name   string
	Role   string
	State  string
	Owner  string
	Origin uint32
	Active bool
	Size   uint64
	Usage  int64
	// Created is the template's creation time, else the record's last
	// update.
	Created time.Time
	Error   string
}
