// Package snapshotter implements containerd's snapshots.Snapshotter over
// dm-thin devices.
//
// Every snapshot is one thin device. A parentless snapshot is a thin
// snapshot of a pre-formatted empty template, so Prepare never runs mkfs; a
// child is a thin snapshot of its committed parent, which is kept inactive
// so snapshotting it needs no suspend. Device-mapper work runs between two
// short metadata transactions, never inside one.
package snapshotter

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/defaults"
	"github.com/superfly/flyio-image-manager/internal/fillmount"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/metrics"
)

// Config says how snapshots map onto thin devices.
type Config struct {
	// BaseSize is the size in bytes of a parentless snapshot's filesystem.
	BaseSize uint64
	// FSType is "ext4" or "xfs".
	FSType string
	// DiscardBlocks discards a device's blocks before it is deleted, so
	// that a loop-backed pool's file shrinks and an SSD gets TRIM.
	DiscardBlocks bool
	// Remote, when set, is the layer store Prepare fills layers from
	// before containerd would download them.
	Remote RemoteLayers
	// Extract bounds what a remote layer may hold.
	Extract extract.Options
	// RemoteFills records remote layer fills in the daemon's metrics;
	// nil records nothing.
	RemoteFills *metrics.Fills
	// Spares is how many activated, empty snapshots of the default
	// template are kept ready for parentless Prepares (0: none).
	Spares int
	// LeaveSpares keeps New from retiring spares and from making new
	// ones: for offline tools (gc with no daemon), which are given the
	// daemon's spare_devices but leave keeping them to the daemon.
	LeaveSpares bool
	// MountDir is the private directory temporary mounts go under
	// (fillmount.Dir of root_dir). New unmounts what a killed daemon left
	// there before reconciling. Empty: the system's temp directory, and
	// no clean-up (tests and tools).
	MountDir string

	// newWaiter makes the pool event waiter of the trouble watcher; nil:
	// the pool's EventWaiter if it has one (*dmpool.Pool and wrappers
	// embedding it), no watcher otherwise. Tests set it.
	newWaiter func() (eventWaiter, error)
	// RemoveInline makes Remove do its dm work (deactivate, discard,
	// delete) before it returns, as it once did, instead of leaving it to
	// the background reaper and Cleanup. Only the benchmarks set it: it
	// is their baseline for the time a caller waits in Remove.
	RemoveInline bool
	// RemoteFillWait bounds how long a Prepare waits for a remote layer
	// fill before it answers with an ordinary empty snapshot (containerd
	// then downloads the layer itself) while the fill goes on in the
	// background; see fillRemote. Zero: DefaultRemoteFillWait.
	RemoteFillWait time.Duration
	// Origins attaches the external origins of lazily-backed bases
	// (LabelExternalOrigin); nil: Prepares naming one are refused.
	Origins ExternalOrigins
}

// Snapshotter is a snapshots.Snapshotter on a dm-thin pool.
type Snapshotter struct {
	pool  Pool
	store *metadata.Store
	cfg   Config

	// templates serialises the creation of each template; the map holds
	// one mutex per template name.
	// originMu orders activations with an external origin (read) with
	// SwitchOrigin (write), see activate.
	originMu sync.RWMutex

	templatesMu sync.Mutex
	templates   map[string]*sync.Mutex

	// format makes an empty filesystem on a device; replaced in unit tests
	// whose pool has no real devices.
	format func(ctx context.Context, fsType, dev string) error

	spares *spares // nil when Config.Spares is 0

	// keys serialises Commit and Remove per snapshot key.
	keys keyLocks

	// readExclusive and usage give Usage the exclusive usage of devices.
	readExclusive exclusiveReader
	usage         usageCache

	// trouble is the watch for pool trouble that may lose writes
	// (trouble.go).
	trouble troubleWatch

	// background counts work that outlives its caller (a template being
	// made for a caller that gave up); Close waits for it.
	background sync.WaitGroup
	// bgMu and bgClosed keep goBackground from adding to background once
	// Close waits for it (a WaitGroup must not grow from zero during a
	// Wait): a call abandoned by the daemon's drain may still run.
	bgMu     sync.Mutex
	bgClosed bool

	// reapMu serialises the passes over devices marked deleting (the
	// background reaper's and Cleanup's); reapQueued is set while a
	// reaper pass is waiting to start.
	reapMu     sync.Mutex
	reapQueued atomic.Bool
	// reapRetrying is set while background retries of failed deletions
	// run (remove.go); reapFailures counts, under reapMu, each pending
	// device's failed attempts, so that it is warned about once;
	// reapRetry is their backoff (zero: defaultReapRetry; tests shorten
	// it).
	reapRetrying atomic.Bool
	reapFailures map[uint32]int
	reapRetry    reapRetry

	// fills are the remote layer fills in flight, by committed name; see
	// remotefill.go.
	fillsMu sync.Mutex
	fills   map[string]*remoteFill
	// unadopted are the layers background fills committed that no
	// Prepare has been offered yet, with when; under fillsMu. See
	// unadopted.go.
	unadopted map[string]time.Time
	// adoptMu: an adoption walk against a Remove that removes hidden
	// layers with their parent; taken before any transaction.
	adoptMu sync.Mutex
	// klog reads the kernel's log for I/O errors on the pool's devices
	// (kernellog.go).
	klog kernelLog
	// closing ends the background fills when the snapshotter closes.
	closing context.Context
	close   context.CancelFunc
}

var (
	_ snapshots.Snapshotter = (*Snapshotter)(nil)
	_ snapshots.Cleaner     = (*Snapshotter)(nil)
)

// New returns a snapshotter over pool and store, after reconciling the
// two: devices a reboot deactivated are activated again and changes a
// crash interrupted are finished or set aside.
func New(ctx context.Context, pool Pool, store *metadata.Store, cfg Config) (*Snapshotter, error) {
	if cfg.FSType == "" {
		cfg.FSType = "ext4"
	}
	if cfg.FSType != "ext4" && cfg.FSType != "xfs" {
		return nil, fmt.Errorf("snapshotter: unsupported filesystem %q", cfg.FSType)
	}
	if cfg.BaseSize == 0 {
		cfg.BaseSize = defaults.BaseSize
	}
	if cfg.BaseSize%dmpool.SectorSize != 0 {
		return nil, fmt.Errorf("snapshotter: base size %d is not a multiple of %d bytes: %w", cfg.BaseSize, dmpool.SectorSize, errdefs.ErrInvalidArgument)
	}
	if cfg.RemoteFillWait <= 0 {
		cfg.RemoteFillWait = DefaultRemoteFillWait
	}
	s := &Snapshotter{pool: pool, store: store, cfg: cfg, templates: map[string]*sync.Mutex{}, fills: map[string]*remoteFill{}, unadopted: map[string]time.Time{}}
	s.closing, s.close = context.WithCancel(context.WithoutCancel(ctx))
	s.readExclusive = func(ctx context.Context, pairs []thinmeta.Pair) (*thinmeta.Usage, error) {
		return thinmeta.ReadPoolExclusive(ctx, pool.Name(), pairs)
	}
	s.usage.maxAge, s.usage.now, s.usage.sem = usageMaxAge, time.Now, make(chan struct{}, 1)
	s.format = func(ctx context.Context, fsType, dev string) error {
		return formatEmpty(ctx, cfg.MountDir, fsType, dev)
	}
	if cfg.MountDir != "" {
		// Before reconcile: a fill or template mount a kill -9 left
		// would keep its device busy, and reconcile and gc would find
		// it so.
		unmounted, err := fillmount.Setup(ctx, cfg.MountDir)
		for _, m := range unmounted {
			log.G(ctx).Warnf("unmounted %s, left mounted by a daemon that died", m)
		}
		if err != nil {
			return nil, err
		}
	}
	// Before reconcile too: a probe a killed gc left keeps its thin id
	// from being deleted.
	s.removeLeftoverProbes(ctx)
	if err := s.reconcile(ctx); err != nil {
		return nil, err
	}
	s.startTroubleWatch(ctx, s.waiter(ctx))
	if !cfg.LeaveSpares {
		s.retireSpares(ctx, cfg.Spares)
	}
	if cfg.Spares > 0 && !cfg.LeaveSpares {
		s.spares = newSpares(s, cfg.Spares)
		if tp, err := s.lookupTemplate(templateName(cfg.FSType, cfg.BaseSize)); err == nil {
			s.spares.load(tp)
		}
		s.spares.start(ctx)
	}
	return s, nil
}

// Close leaves devices active: containers keep running while the daemon
// restarts. The metadata store is the caller's to close.
func (s *Snapshotter) Close() error {
	s.stopTroubleWatch()
	if s.spares != nil {
		s.spares.close()
	}
	// Background fills stop (their fill snapshots are removed); the
	// reaper finishes its pass.
	if s.close != nil {
		s.close()
	}
	s.bgMu.Lock()
	s.bgClosed = true
	s.bgMu.Unlock()
	s.background.Wait()
	// Last: background work (a fill's Commit, a template) still looks
	// at the pool's trouble until here.
	s.closeKernelLog(context.Background())
	log.L.Debug("snapshotter closed")
	return nil
}

// waiter makes the trouble watcher's event waiter, or returns nil (no
// watcher: Prepare and Commit still look at the pool themselves).
func (s *Snapshotter) waiter(ctx context.Context) eventWaiter {
	newWaiter := s.cfg.newWaiter
	if newWaiter == nil {
		// A *dmpool.Pool, or a wrapper that embeds one (the daemon's
		// guarded pool).
		src, ok := s.pool.(interface {
			EventWaiter() (*dmpool.EventWaiter, error)
		})
		if !ok {
			return nil
		}
		newWaiter = func() (eventWaiter, error) { return src.EventWaiter() }
	}
	w, err := newWaiter()
	if err != nil {
		log.G(ctx).WithError(err).Warn("cannot wait for pool events; pool trouble is seen only when a Prepare or Commit looks")
		return nil
	}
	return w
}

// DeviceName is the dm name of thin id in pool. The pool name is part of
// it so two pools on one host never collide.
func DeviceName(pool string, id uint32) string {
	return fmt.Sprintf("%s-thin-%d", pool, id)
}

func (s *Snapshotter) deviceName(id uint32) string { return DeviceName(s.pool.Name(), id) }

// goBackground runs fn in a goroutine Close waits for, unless Close has
// begun: it then reports false and fn does not run.
func (s *Snapshotter) goBackground(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgClosed {
		return false
	}
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		fn()
	}()
	return true
}
