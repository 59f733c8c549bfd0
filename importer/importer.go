// Package importer turns an image tarball in S3 into a base snapshot and a
// containerd image: process-image.
//
// A run streams the object (s3fetch) through the validated extractor
// straight onto a fresh thin device that containerd's snapshot service
// prepared through this daemon's own snapshotter, commits it under the
// layer's chain id and registers config, manifest and image in containerd.
// The same bucket/key/ETag is processed once; concurrent requests for it
// join the same run. Runs are persisted, so a daemon restart resumes them,
// and a failed run removes its snapshot: nothing half-filled is ever
// committed.
package importer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/defaults"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/metrics"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// Config says where images go and how archives are checked.
type Config struct {
	// Snapshotter is the name containerd knows this daemon by.
	Snapshotter string
	// Extract bounds what an archive may hold (Mode is forced to Rootfs).
	Extract extract.Options
	// UnpackTimeout bounds the download and extraction of one run.
	UnpackTimeout time.Duration
	// UnpackQueueSize bounds how many runs download and extract at once;
	// the others wait in the unpacks queue, first come first served.
	UnpackQueueSize int
	// Fills records each run's S3 fill in the daemon's metrics; nil
	// records nothing.
	Fills *metrics.Fills
	// MountDir is where runs mount their snapshot (fillmount.Dir of
	// root_dir); "" is the system's temp directory.
	MountDir string
	// BlockPrefix is the [s3] block_prefix: set, a run fills from the
	// block image of its key when the bucket has one (blockfill.go),
	// and PublishBase publishes there.
	BlockPrefix string
	// Pool is the thin pool's dm name, whose metadata PublishBase reads
	// a base's mapped ranges from.
	Pool string
	// Origins serves lazily-backed bases (lazy.go); nil: --lazy is
	// refused. LazyDefault makes every block run lazy unless asked
	// otherwise ([lazy] default).
	Origins     Origins
	LazyDefault bool
}

// Request asks for one S3 object to be processed.
type Request struct {
	Key     string `json:"s3_key"`
	ImageID string `json:"image_id,omitempty"`
	Ref     string `json:"ref,omitempty"`
	// FromBlock requires a block image: without one the request fails
	// instead of extracting the tarball.
	FromBlock bool `json:"from_block,omitempty"`
	// Lazy makes the base usable at once: a blank device whose external
	// origin serves the block image, fetched in the background
	// (lazy.go). It requires a block image, like FromBlock. Nil is
	// Config.LazyDefault (which uses a block image only if there is one).
	Lazy *bool `json:"lazy,omitempty"`
}

// Importer runs process-image requests.
type Importer struct {
	cfg    Config
	s3     *s3fetch.Client
	cd     Containerd
	store  *metadata.Store
	ctx    context.Context // the daemon's: runs outlive the request
	wg     sync.WaitGroup
	mu     sync.Mutex
	active map[string]*runState // by run id
	// unpacks admits Config.UnpackQueueSize runs to download and extract.
	unpacks *fifo
	// dlSeq orders runs by when they asked s3fetch for a download slot.
	dlSeq atomic.Uint64
}

// runState is the live view of a run in progress: its record plus a
// channel closed when it finishes.
type runState struct {
	mu   sync.Mutex
	run  metadata.Run
	done chan struct{}

	// ctx is the run's own: cancelled by Cancel (cause ErrCancelled) or
	// with the daemon's.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// cancelled is set by Cancel, under mu, only before the run commits;
	// cancelledIn is the state the run was in then.
	cancelled   bool
	cancelledIn metadata.RunState
	// release frees the run's unpacks slot once it holds one.
	release func()
	// download is where the run is in s3fetch's download queue
	// ("waiting", "active" or none) and dlSeq when it got there.
	download string
	dlSeq    uint64
}

func (rs *runState) snapshot() metadata.Run {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.run
}

// New returns an importer. ctx bounds every run it starts.
func New(ctx context.Context, cfg Config, s3 *s3fetch.Client, cd Containerd, store *metadata.Store) *Importer {
	cfg.Extract.Mode = extract.Rootfs
	if cfg.UnpackTimeout <= 0 {
		cfg.UnpackTimeout = defaults.UnpackTimeoutSeconds * time.Second
	}
	return &Importer{cfg: cfg, s3: s3, cd: cd, store: store, ctx: ctx, active: map[string]*runState{}, unpacks: newFIFO(cfg.UnpackQueueSize)}
}

// Wait blocks until every run this importer started has stopped.
func (im *Importer) Wait() { im.wg.Wait() }

// Submit starts a run for req, or returns the run already done or under
// way for the same object version.
func (im *Importer) Submit(ctx context.Context, req Request) (metadata.Run, error) {
	if err := s3fetch.ValidateKey(req.Key); err != nil {
		return metadata.Run{}, err
	}
	info, err := im.s3.Stat(ctx, req.Key)
	if err != nil {
		return metadata.Run{}, err
	}
	bucket := im.s3.Config().Bucket
	if req.ImageID == "" {
		req.ImageID = DeriveImageID(req.Key)
	}
	if req.Ref == "" {
		req.Ref = DeriveRef(req.ImageID)
	}

	im.mu.Lock()
	defer im.mu.Unlock()
	src := metadata.SourceID(bucket, req.Key, info.ETag)
	for rs := im.activeFor(src); rs != nil; rs = im.activeFor(src) {
		if !rs.cancelRequested() {
			return rs.snapshot(), nil // join the run under way
		}
		// It is being cancelled: rather than join a run about to stop,
		// wait until it has cleaned up (and left im.active), then look
		// again.
		im.mu.Unlock()
		select {
		case <-rs.done:
			im.mu.Lock()
		case <-ctx.Done():
			im.mu.Lock()
			return metadata.Run{}, ctx.Err()
		}
	}
	var prev *metadata.Run
	im.store.View(func(tx *metadata.Tx) error {
		prev, _ = tx.RunForSource(bucket, req.Key, info.ETag)
		return nil
	})
	if prev != nil && prev.State == metadata.RunDone && prev.ImageID == req.ImageID && prev.Ref == req.Ref {
		return *prev, nil // fetched once already
	}
	// Looked up under im.mu, like the rest of the decision: a manifest
	// GET is small, and two callers must not start two runs.
	lazy, err := im.wantLazy(req)
	if err != nil {
		return metadata.Run{}, err
	}
	block, err := im.chooseBlock(ctx, req.Key, info.ETag, req.FromBlock || req.Lazy != nil && *req.Lazy)
	if err != nil {
		return metadata.Run{}, err
	}
	now := time.Now().UTC()
	run := metadata.Run{
		ID: newRunID(), Bucket: bucket, Key: req.Key, ETag: info.ETag, Size: info.Size,
		ImageID: req.ImageID, Ref: req.Ref, State: metadata.RunQueued, Created: now,
		Block: block, Lazy: lazy && block != "",
	}
	if err := im.store.Update(func(tx *metadata.Tx) error { return tx.PutRun(&run) }); err != nil {
		return metadata.Run{}, err
	}
	failpoint.Hit(failpoint.ImportAfterQueued)
	im.start(run)
	return run, nil
}

// activeFor returns the live run of source src, if any; im.mu must be
// held.
func (im *Importer) activeFor(src string) *runState {
	for _, rs := range im.active {
		if r := rs.snapshot(); r.Source() == src {
			return rs
		}
	}
	return nil
}

// start runs r in the background; im.mu must be held.
func (im *Importer) start(r metadata.Run) {
	rs := &runState{run: r, done: make(chan struct{})}
	rs.ctx, rs.cancel = context.WithCancelCause(im.ctx)
	im.active[r.ID] = rs
	im.wg.Add(1)
	go func() {
		defer im.wg.Done()
		defer close(rs.done)
		defer rs.cancel(nil)
		im.execute(rs)
		im.mu.Lock()
		delete(im.active, r.ID)
		im.mu.Unlock()
	}()
}

// Get returns the current state of run id.
func (im *Importer) Get(id string) (metadata.Run, error) {
	im.mu.Lock()
	rs, ok := im.active[id]
	im.mu.Unlock()
	if ok {
		return rs.snapshot(), nil
	}
	var r *metadata.Run
	err := im.store.View(func(tx *metadata.Tx) (err error) {
		r, err = tx.Run(id)
		return err
	})
	if err != nil {
		return metadata.Run{}, err
	}
	return *r, nil
}

// List returns every run, with live progress for those under way.
func (im *Importer) List() ([]metadata.Run, error) {
	var runs []*metadata.Run
	if err := im.store.View(func(tx *metadata.Tx) (err error) {
		runs, err = tx.Runs()
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]metadata.Run, 0, len(runs))
	for _, r := range runs {
		if live, err := im.Get(r.ID); err == nil {
			out = append(out, live)
		}
	}
	return out, nil
}

// Resume restarts the runs a previous daemon left unfinished. Their
// half-filled snapshots are removed first: extraction starts over.
func (im *Importer) Resume(ctx context.Context) error {
	var runs []*metadata.Run
	if err := im.store.View(func(tx *metadata.Tx) (err error) {
		runs, err = tx.Runs()
		return err
	}); err != nil {
		return err
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	for _, r := range runs {
		if r.State.Finished() {
			continue
		}
		log.G(ctx).Infof("resuming process-image run %s of s3://%s/%s (was %s)", r.ID, r.Bucket, r.Key, r.State)
		// It starts over, so it waits its turn in the unpacks queue
		// like a new run; the record says so once it is admitted.
		r.State = metadata.RunQueued
		im.start(*r)
	}
	return nil
}

// WaitRun blocks until run id finishes or ctx ends, and returns its state.
func (im *Importer) WaitRun(ctx context.Context, id string) (metadata.Run, error) {
	im.mu.Lock()
	rs, ok := im.active[id]
	im.mu.Unlock()
	if ok {
		select {
		case <-rs.done:
		case <-ctx.Done():
			return rs.snapshot(), ctx.Err()
		}
	}
	return im.Get(id)
}

func newRunID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}
