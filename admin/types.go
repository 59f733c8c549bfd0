package admin

import (
	"encoding/json"
	"time"
	"unicode"
)

// The admin API's wire types: what travels on the socket and what the
// operator commands print with --json. They are this package's own, in
// snake_case, so that renaming a field of a storage record (metadata) or
// of a domain type (dmpool, importer, gc) cannot change the API;
// adminwire converts the domain types to these at the boundary. Each
// field says what a client reads in its JSON key.

// RunState is a process-image run's "state", one of these strings.
type RunState string

const (
	RunQueued      RunState = "queued"      // waiting for the unpacks queue
	RunDownloading RunState = "downloading" // streaming the object into its snapshot
	RunExtracting  RunState = "extracting"  // the last entries are written
	RunCommitting  RunState = "committing"  // the base is being committed; cancel is refused
	RunDone        RunState = "done"        // image registered: final
	RunFailed      RunState = "failed"      // see "error": final
	RunCancelled   RunState = "cancelled"   // by cancel --run-id: final
)

// Finished reports whether the run will not change any more.
func (s RunState) Finished() bool { return s == RunDone || s == RunFailed || s == RunCancelled }

// Run is one process-image run, as process-image, status --run-id and
// GET /v1/runs/{id} answer it: an S3 tarball becoming a base snapshot
// and a containerd image.
type Run struct {
	ID          string   `json:"id"`                     // the run id cancel and status --run-id take
	Bucket      string   `json:"bucket"`                 // the S3 object read: its bucket,
	Key         string   `json:"key"`                    // its key,
	ETag        string   `json:"etag"`                   // and the ETag every read is pinned to
	ImageID     string   `json:"image_id"`               // the image id delete-image takes
	Ref         string   `json:"ref"`                    // the containerd image it registers
	State       RunState `json:"state"`                  // see RunState
	Error       string   `json:"error,omitempty"`        // why it failed
	SnapshotKey string   `json:"snapshot_key,omitempty"` // the snapshot being filled
	ChainID     string   `json:"chain_id,omitempty"`     // the committed base, once done
	DiffID      string   `json:"diff_id,omitempty"`      // the layer's uncompressed digest
	Digest      string   `json:"digest,omitempty"`       // the layer blob's (compressed) digest
	// Block is the manifest key of the block image the run fills from
	// instead of extracting the tarball; "" for a tarball import.
	Block string `json:"block,omitempty"`
	// Origin is the lazily-backed origin a --lazy run's base reads from.
	Origin string `json:"origin,omitempty"`
	Lazy   bool   `json:"lazy,omitempty"`
	// Progress, in bytes: of the object ("size"), read so far
	// ("compressed_bytes"), of the tar stream written ("bytes").
	Size            int64     `json:"size"`             // 0 until known
	CompressedBytes int64     `json:"compressed_bytes"` // of "size": the progress bar
	Bytes           int64     `json:"bytes"`            // uncompressed
	Entries         int       `json:"entries"`          // tar entries written
	Created         time.Time `json:"created"`          // RFC 3339, UTC
	Updated         time.Time `json:"updated"`          // the last change of any field
}

// ProcessImageRequest asks for an S3 tarball to be imported. ImageID and
// Ref default to ones derived from the key.
type ProcessImageRequest struct {
	Key     string `json:"s3_key"`
	ImageID string `json:"image_id,omitempty"`
	Ref     string `json:"ref,omitempty"`
	// FromBlock requires a block image of the key: the request fails
	// without one instead of extracting the tarball.
	FromBlock bool `json:"from_block,omitempty"`
	// Lazy makes the base usable at once from the block image (an
	// external origin fetched on demand and in the background); false
	// makes a filled base; absent is the daemon's [lazy] default.
	Lazy *bool `json:"lazy,omitempty"`
}

// PublishBaseResult says what publish-base uploaded.
type PublishBaseResult struct {
	Image       Image  `json:"image"`        // the image whose base was published
	ManifestKey string `json:"manifest_key"` // where its manifest is
	Chunks      int    `json:"chunks"`       // in the manifest
	ZeroChunks  int    `json:"zero_chunks"`  // all zeros, left out
	Uploaded    int    `json:"uploaded"`     // chunks put
	Reused      int    `json:"reused"`       // chunks already in the bucket
	// Bytes of the device the manifest covers, and compressed bytes put.
	Bytes         int64 `json:"bytes"`
	UploadedBytes int64 `json:"uploaded_bytes"`
}

// Image is an image process-image imported, as delete-image names it.
type Image struct {
	ID      string    `json:"id"`       // the image id
	Ref     string    `json:"ref"`      // its containerd image
	ChainID string    `json:"chain_id"` // its base snapshot's chain id
	RunID   string    `json:"run_id"`   // the run that imported it
	Bucket  string    `json:"bucket"`   // the S3 object it came from: bucket,
	Key     string    `json:"key"`      // key,
	ETag    string    `json:"etag"`     // and ETag
	Created time.Time `json:"created"`  // RFC 3339, UTC
}

// QueueInfo is one queue in queue-status and status: "downloads" (S3
// reads, shared with layer fills) or "unpacks" (process-image runs).
type QueueInfo struct {
	Name     string `json:"name"`     // "downloads" or "unpacks"
	Capacity int    `json:"capacity"` // slots ([s3] download_queue_size, [extract] unpack_queue_size)
	Active   int    `json:"active"`   // holding a slot, layer fills included
	Waiting  int    `json:"waiting"`  // in line, layer fills included
	// The process-image runs in the queue, holders first (position 0),
	// then those in line (position 1 goes next); never the layer fills.
	Runs []QueuedRun `json:"runs"`
}

// QueuedRun is a run's place in a queue.
type QueuedRun struct {
	ID       string   `json:"id"`       // the run id
	Key      string   `json:"s3_key"`   // the object it reads
	State    RunState `json:"state"`    // see RunState
	Position int      `json:"position"` // 0 holds a slot; 1 goes next
}

// PoolStatus is pool_status in status: the thin-pool's status line as
// the kernel reports it. Blocks are counted in data blocks of
// "data_block_size" bytes and in 4 KiB metadata blocks.
type PoolStatus struct {
	TransactionID    uint64 `json:"transaction_id"`     // the pool's metadata transaction
	UsedMetaBlocks   uint64 `json:"used_meta_blocks"`   // of "total_meta_blocks"
	TotalMetaBlocks  uint64 `json:"total_meta_blocks"`  // 4 KiB each
	UsedDataBlocks   uint64 `json:"used_data_blocks"`   // of "total_data_blocks"
	TotalDataBlocks  uint64 `json:"total_data_blocks"`  // "data_block_size" each
	DataBlockSize    uint64 `json:"data_block_size"`    // bytes
	ReadOnly         bool   `json:"read_only"`          // the kernel refuses writes
	OutOfDataSpace   bool   `json:"out_of_data_space"`  // no data block left
	NeedsCheck       bool   `json:"needs_check"`        // thin_check wanted before rw
	ErrorIfNoSpace   bool   `json:"error_if_no_space"`  // a full pool fails writes at once
	Fail             bool   `json:"fail"`               // the pool failed: the other fields are zero
	HeldMetadataRoot string `json:"held_metadata_root"` // "-" unless a metadata snapshot is held
	EventNr          uint32 `json:"event_nr"`           // device-mapper's event counter of the pool
}

// GCReport is what gc --json prints: the plan, and after --force what
// became of each item.
type GCReport struct {
	Pool       string   `json:"pool"`        // the pool's name
	DryRun     bool     `json:"dry_run"`     // true: nothing was removed
	Containerd string   `json:"containerd"`  // whether unreferenced snapshots were looked for, and why not
	MinAge     string   `json:"min_age"`     // a Go duration ("5m0s"): younger snapshots were skipped
	Items      []GCItem `json:"items"`       // what gc found
	TotalBytes uint64   `json:"total_bytes"` // the items' "bytes", summed
	Removed    int      `json:"removed"`     // items removed (--force)
	Failed     int      `json:"failed"`      // items whose removal failed; gc exits non-zero
}

// GCItem is one thing gc found.
type GCItem struct {
	Kind      string `json:"kind"`                // e.g. "orphaned", "unknown-device", "unreferenced"
	DeviceID  uint32 `json:"device_id"`           // thin id, 0 when the record names none
	Snapshot  string `json:"snapshot,omitempty"`  // our snapshot key, for a snapshot
	Template  string `json:"template,omitempty"`  // the template's name, for a template
	InPool    bool   `json:"in_pool"`             // the thin id exists in the pool
	Bytes     uint64 `json:"bytes"`               // what its device maps (shared blocks counted for each)
	Detail    string `json:"detail,omitempty"`    // why it is listed
	Blocked   string `json:"blocked,omitempty"`   // why it is listed but kept
	Namespace string `json:"namespace,omitempty"` // a failed import's snapshot in containerd: namespace
	Name      string `json:"name,omitempty"`      // and name (removed there first)
	Removed   bool   `json:"removed,omitempty"`   // --force removed it
	Error     string `json:"error,omitempty"`     // --force could not remove it
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
		// Its keys are ours in CamelCase.
		renamed := make(map[string]json.RawMessage, len(keys))
		for k, v := range keys {
			renamed[snakeCase(k)] = v
		}
		var err error
		if b, err = json.Marshal(renamed); err != nil {
			return err
		}
	}
	return json.Unmarshal(b, (*wire)(p))
}

// snakeCase is a Go field name as our JSON key: "UsedDataBlocks" is
// "used_data_blocks", "TransactionID" "transaction_id".
func snakeCase(name string) string {
	var out []rune
	rs := []rune(name)
	for i, r := range rs {
		if i > 0 && unicode.IsUpper(r) && unicode.IsLower(rs[i-1]) {
			out = append(out, '_')
		}
		out = append(out, unicode.ToLower(r))
	}
	return string(out)
}
