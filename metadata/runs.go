package metadata

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// RunState is where a process-image run is.
type RunState string

const (
	RunQueued      RunState = "queued"
	RunDownloading RunState = "downloading"
	RunExtracting  RunState = "extracting"
	RunCommitting  RunState = "committing"
	RunDone        RunState = "done"
	RunFailed      RunState = "failed"
	// RunCancelled is a run an operator stopped (cancel --run-id): like a
	// failed run it left nothing behind, and it is never resumed.
	RunCancelled RunState = "cancelled"
)

// Finished reports whether the run will not change any more.
func (s RunState) Finished() bool { return s == RunDone || s == RunFailed || s == RunCancelled }

// Run is one process-image run: an S3 tarball becoming a base snapshot and
// a containerd image.
type Run struct {
	ID      string   `json:"id"`
	Bucket  string   `json:"bucket"`
	Key     string   `json:"key"`
	ETag    string   `json:"etag"`
	ImageID string   `json:"image_id"`
	Ref     string   `json:"ref"`
	State   RunState `json:"state"`
	Error   string   `json:"error,omitempty"`

	// SnapshotKey is the active snapshot being filled (in containerd's
	// namespace); ChainID the committed base once done.
	SnapshotKey string `json:"snapshot_key,omitempty"`
	ChainID     string `json:"chain_id,omitempty"`
	DiffID      string `json:"diff_id,omitempty"`
	Digest      string `json:"digest,omitempty"`
	// Compression is the tarball's ("gzip", "zstd", "" for none), for
	// the layer media type a block image's importer registers.
	Compression string `json:"compression,omitempty"`

	// Block is the manifest key of the block image the run fills from
	// instead of extracting the tarball; "" for a tarball import.
	Block string `json:"block,omitempty"`
	// BlockTable identifies the manifest's chunk table (BlockDone's
	// indices mean nothing for another), and BlockDone is the journal
	// of a block fill: bit i set once chunk i is written and the device
	// synced, so that a run interrupted by a crash continues from there.
	BlockTable string `json:"block_table,omitempty"`
	BlockDone  []byte `json:"block_done,omitempty"`
	// Lazy makes a block run's base a blank device whose external origin
	// serves the block image (package lazy) instead of a filled one:
	// usable at once, fetched in the background. Origin is that origin's
	// name, once chosen.
	Lazy   bool   `json:"lazy,omitempty"`
	Origin string `json:"origin,omitempty"`

	Size            int64 `json:"size"`
	CompressedBytes int64 `json:"compressed_bytes"`
	Bytes           int64 `json:"bytes"`
	Entries         int   `json:"entries"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Source identifies what a run fetched: the same bucket, key and ETag is
// processed once.
func (r *Run) Source() string { return SourceID(r.Bucket, r.Key, r.ETag) }

// SourceID is the dedup key of an S3 object version.
func SourceID(bucket, key, etag string) string { return bucket + "\x00" + key + "\x00" + etag }

var (
	bucketRuns       = []byte("runs")
	bucketRunSources = []byte("run_sources")
	bucketImages     = []byte("images")
)

// PutRun stores a run and indexes it by its source.
func (t *Tx) PutRun(r *Run) error {
	r.Updated = time.Now().UTC()
	if err := put(t.bucket(bucketRuns), []byte(r.ID), r); err != nil {
		return err
	}
	if r.ETag == "" {
		return nil
	}
	return t.bucket(bucketRunSources).Put([]byte(r.Source()), []byte(r.ID))
}

// Run returns the run with id.
func (t *Tx) Run(id string) (*Run, error) {
	return get[Run](t.bucket(bucketRuns), []byte(id), fmt.Sprintf("run %q", id))
}

// RunForSource returns the latest run of an S3 object version.
func (t *Tx) RunForSource(bucket, key, etag string) (*Run, error) {
	id := t.bucket(bucketRunSources).Get([]byte(SourceID(bucket, key, etag)))
	if id == nil {
		return nil, fmt.Errorf("run of s3://%s/%s (etag %s): %w", bucket, key, etag, errdefs.ErrNotFound)
	}
	return t.Run(string(id))
}

// Runs lists every run, oldest id first.
func (t *Tx) Runs() ([]*Run, error) { return all[Run](t.bucket(bucketRuns), "run %q") }

// Image is a base imported by process-image and registered in containerd.
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

// PutImage records an imported image under its id.
func (t *Tx) PutImage(img *Image) error { return put(t.bucket(bucketImages), []byte(img.ID), img) }

// Image returns the imported image with id.
func (t *Tx) Image(id string) (*Image, error) {
	return get[Image](t.bucket(bucketImages), []byte(id), fmt.Sprintf("image %q", id))
}

// DeleteImage forgets an imported image.
func (t *Tx) DeleteImage(id string) error { return t.bucket(bucketImages).Delete([]byte(id)) }

// Images lists the imported images.
func (t *Tx) Images() ([]*Image, error) { return all[Image](t.bucket(bucketImages), "image %q") }
