package admin

import (
	"encoding/json"
	"time"
)

// The admin API's wire types: what travels on the socket and what the
// operator commands print with --json. They are this package's own, in
// snake_case, so that renaming a field of a storage record (metadata) or
// of a domain type (dmpool, importer, gc) cannot change the API; the
// daemon converts its domain types to these at the boundary.

// RunState is a process-image run's state.
type RunState string

const (
	RunQueued      RunState = "queued"
	RunDownloading RunState = "downloading"
	RunExtracting  RunState = "extracting"
	RunCommitting  RunState = "committing"
	RunDone        RunState = "done"
	RunFailed      RunState = "failed"
	RunCancelled   RunState = "cancelled"
)

// Finished reports whether the run will not change any more.
func (s RunState) Finished() bool { return s == RunDone || s == RunFailed || s == RunCancelled }

// Run is one process-image run: an S3 tarball becoming a base snapshot
// and a containerd image.
type Run struct {
	ID      string   `json:"id"`
	Bucket  string   `json:"bucket"`
	Key     string   `json:"key"`
	ETag    string   `json:"etag"`
	ImageID string   `json:"image_id"`
	Ref     string   `json:"ref"`
	State   RunState `json:"state"`
	Error   string   `json:"error,omitempty"`
	// SnapshotKey is the active snapshot being filled; ChainID the
	// committed base once done.
	SnapshotKey string `json:"snapshot_key,omitempty"`
	ChainID     string `json:"chain_id,omitempty"`
	DiffID      string `json:"diff_id,omitempty"`
	Digest      string `json:"digest,omitempty"`
	// Size is the S3 object's; CompressedBytes what was read of it so
	// far; Bytes the uncompressed tar stream; Entries its entries.
	Size            int64     `json:"size"`
	CompressedBytes int64     `json:"compressed_bytes"`
	Bytes           int64     `json:"bytes"`
	Entries         int       `json:"entries"`
	Created         time.Time `json:"created"`
	Updated         time.Time `json:"updated"`
}

// ProcessImageRequest asks for an S3 tarball to be imported. ImageID and
// Ref default to ones derived from the key.
type ProcessImageRequest struct {
	Key     string `json:"s3_key"`
	ImageID string `json:"image_id,omitempty"`
	Ref     string `json:"ref,omitempty"`
}

// Image is an image process-image imported, as delete-image names it.
type Image struct {
	ID      string    `json:"id"`
	Ref     string    `json:"ref"`
	ChainID string    `json:"chain_id"`
	RunID   string    `json:"run_id"`
	Bucket  string    `json:"bucket"`
	Key     string    `json:"key"`
	ETag    string    `json:"etag"`
	Created time.Time `json:"created"`
}

// QueueInfo is a snapshot of one queue (downloads or unpacks).
type QueueInfo struct {
	Name     string `json:"name"`
	Capacity int    `json:"capacity"`
	Active   int    `json:"active"`
	Waiting  int    `json:"waiting"`
	// Runs are the process-image runs in the queue: holders first
	// (Position 0), then those waiting in line (Position 1 goes next).
	// The downloads queue is shared with layer fills, which count in
	// Active and Waiting but are not runs.
	Runs []QueuedRun `json:"runs"`
}

// QueuedRun is a run's place in a queue.
type QueuedRun struct {
	ID       string   `json:"id"`
	Key      string   `json:"s3_key"`
	State    RunState `json:"state"`
	Position int      `json:"position"`
}

// PoolStatus is the thin-pool's kernel status.
type PoolStatus struct {
	TransactionID   uint64 `json:"transaction_id"`
	UsedMetaBlocks  uint64 `json:"used_meta_blocks"`
	TotalMetaBlocks uint64 `json:"total_meta_blocks"`
	UsedDataBlocks  uint64 `json:"used_data_blocks"`
	TotalDataBlocks uint64 `json:"total_data_blocks"`
	// DataBlockSize is in bytes.
	DataBlockSize  uint64 `json:"data_block_size"`
	ReadOnly       bool   `json:"read_only"`
	OutOfDataSpace bool   `json:"out_of_data_space"`
	NeedsCheck     bool   `json:"needs_check"`
	ErrorIfNoSpace bool   `json:"error_if_no_space"`
	// Fail is set when the kernel reports the pool as failed; all other
	// fields are then zero.
	Fail bool `json:"fail"`
	// HeldMetadataRoot is "-" unless a metadata snapshot is reserved.
	HeldMetadataRoot string `json:"held_metadata_root"`
	// EventNr is the pool device's device-mapper event counter.
	EventNr uint32 `json:"event_nr"`
}

// GCReport is a gc plan, and after it was applied its outcome.
type GCReport struct {
	Pool   string `json:"pool"`
	DryRun bool   `json:"dry_run"`
	// Containerd says whether unreferenced snapshots were looked for.
	Containerd string `json:"containerd"`
	// MinAge is a Go duration ("5m0s").
	MinAge     string   `json:"min_age"`
	Items      []GCItem `json:"items"`
	TotalBytes uint64   `json:"total_bytes"`
	Removed    int      `json:"removed"`
	Failed     int      `json:"failed"`
}

// GCItem is one thing gc found (see gc.Item).
type GCItem struct {
	Kind      string `json:"kind"`
	DeviceID  uint32 `json:"device_id"`
	Snapshot  string `json:"snapshot,omitempty"`
	Template  string `json:"template,omitempty"`
	InPool    bool   `json:"in_pool"`
	Bytes     uint64 `json:"bytes"`
	Detail    string `json:"detail,omitempty"`
	Blocked   string `json:"blocked,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	Removed   bool   `json:"removed,omitempty"`
	Error     string `json:"error,omitempty"`
}

// DiagFile is one file of a diagnostics bundle.
type DiagFile struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// metadataBlockSize is dm-thin's metadata block, fixed at 4 KiB
// (dmpool.MetadataBlockSize).
const metadataBlockSize = 4096

// UsedMetaBytes and TotalMetaBytes are the metadata usage in bytes.
func (s PoolStatus) UsedMetaBytes() uint64  { return s.UsedMetaBlocks * metadataBlockSize }
func (s PoolStatus) TotalMetaBytes() uint64 { return s.TotalMetaBlocks * metadataBlockSize }

// UnmarshalJSON also reads the keys a daemon of the previous release
// wrote (dmpool.Status's Go field names, "UsedDataBlocks"): during an
// upgrade a new client meets the old daemon, and every counter decoded as
// zero would report a full pool as empty.
func (p *PoolStatus) UnmarshalJSON(b []byte) error {
	type wire PoolStatus
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	_, snake := keys["total_data_blocks"]
	_, camel := keys["TotalDataBlocks"]
	if camel && !snake {
		var legacy struct {
			TransactionID    uint64
			UsedMetaBlocks   uint64
			TotalMetaBlocks  uint64
			UsedDataBlocks   uint64
			TotalDataBlocks  uint64
			DataBlockSize    uint64
			ReadOnly         bool
			OutOfDataSpace   bool
			NeedsCheck       bool
			ErrorIfNoSpace   bool
			Fail             bool
			HeldMetadataRoot string
			EventNr          uint32
		}
		if err := json.Unmarshal(b, &legacy); err != nil {
			return err
		}
		*p = PoolStatus(legacy)
		return nil
	}
	return json.Unmarshal(b, (*wire)(p))
}
