package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"

	"github.com/containerd/errdefs"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/layerstore"
	"github.com/superfly/flyio-image-manager/lazy"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/metrics"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// Mode says what a caller needs built.
type Mode int

const (
	// Daemon builds everything the daemon serves: the store (read-write,
	// its lock refusing a second daemon), the pool, the guard, the S3
	// client and layer store, the snapshotter with spares, the importer
	// bound to a context StopRuns cancels, and the metrics. It also does
	// the start-up chores that only the pool's owner may do: release a
	// metadata snapshot a killed daemon or gc left, and reserve the
	// pool's thin ids.
	Daemon Mode = iota
	// Offline is for commands that change the pool with no daemon running
	// (gc --force): the store read-write (its lock refuses the command
	// beside a daemon), the pool, and the same guarded snapshotter with
	// the same settings as the daemon's, except that it neither retires
	// nor makes spares (spare_devices is the daemon's to keep). Like the
	// daemon it releases a metadata snapshot a killed daemon or gc left
	// and records its own holds. No S3 client, importer or metrics.
	Offline
	// Inspect only opens the store read-only, for commands that read the
	// records with no daemon (gc --dry-run, diag, backup); the pool, when
	// needed, is read by name, and a metadata snapshot read records its
	// hold for the next daemon start or gc --force to release.
	Inspect
)

func (m Mode) String() string {
	switch m {
	case Daemon:
		return "daemon"
	case Offline:
		return "offline"
	case Inspect:
		return "inspect"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Service is the set of parts Open built; fields a Mode does not build
// are nil.
type Service struct {
	Config config.Config
	Mode   Mode

	Store *metadata.Store
	// Pool is the raw pool (status, metrics); the snapshotter sees it
	// through Guard.
	Pool       *dmpool.Pool
	PoolResult dmpool.OpenResult
	Guard      *snapshotter.PoolGuard

	Snapshotter *snapshotter.Snapshotter
	S3          *s3fetch.Client
	Metrics     *metrics.Metrics
	Importer    *importer.Importer
	Containerd  *importer.LazyContainerd
	// Origins serves lazily-backed bases (daemon with [s3] block_prefix
	// only; nil otherwise).
	Origins *lazy.Manager

	stopRuns context.CancelFunc
}

// Option adjusts Open.
type Option func(*options)

type options struct {
	status func(format string, args ...any)
}

// WithStatus reports each long step as it begins (the daemon sends them
// to systemd as STATUS=).
func WithStatus(f func(format string, args ...any)) Option {
	return func(o *options) { o.status = f }
}

// Open builds the parts mode needs from cfg. On failure what was built is
// closed again. The store's error is returned as metadata.Open gave it,
// so callers can tell metadata.ErrLocked (a daemon holds it).
func Open(ctx context.Context, cfg config.Config, mode Mode, opts ...Option) (_ *Service, err error) {
	o := options{status: func(string, ...any) {}}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Service{Config: cfg, Mode: mode}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The database lock comes first: a second daemon (or an offline gc
	// beside a daemon) must fail before it touches the pool or a socket.
	s.Store, err = metadata.Open(MetadataPath(cfg), metadata.Options{ReadOnly: mode == Inspect})
	if err != nil {
		return nil, err
	}
	if mode == Inspect {
		// A read of the pool's metadata snapshot (gc --dry-run, diag)
		// records its hold, so a killed command's hold is released by
		// the next daemon start or gc --force, as a killed daemon's is.
		// Only those release: they hold the database lock alone, and a
		// command beside this one (a read-only open shares the lock)
		// may be reading under its hold right now.
		thinmeta.SetMarker(markerPath(cfg))
		return s, nil
	}

	o.status("opening pool %s", cfg.Pool.Name)
	s.Pool, s.PoolResult, err = OpenPool(ctx, cfg)
	if err != nil {
		if mode == Daemon {
			// The daemon's start has always named the step that failed.
			return nil, fmt.Errorf("pool: %w", err)
		}
		return nil, err
	}
	if mode == Daemon {
		log.G(ctx).Infof("pool %s %s", s.Pool.Name(), s.PoolResult)
	}
	// The database lock is ours alone (a daemon, or gc --force with no
	// daemon): no other process of ours reads under a hold now.
	releaseLeftoverHold(ctx, cfg, s.Pool.Name())
	if mode == Daemon {
		if s.PoolResult != dmpool.Created {
			reserveExistingIDs(ctx, s.Pool.Name(), s.Store)
		}
		// The S3 client comes before the snapshotter, which fills layers
		// through it when a layer store is configured.
		if s.S3, err = NewS3(ctx, cfg); err != nil {
			return nil, err
		}
		if cfg.Snapshotter.MountType == "block" {
			log.G(ctx).Warn(`snapshotter.mount_type = "block" is retired and now means "fs": mounts are the thin device's ext4/xfs filesystem, whose Source microVM runtimes attach (docs/microvm.md); remove the key`)
		}
		s.Metrics = metrics.New()
	}
	snCfg := snapshotterConfig(cfg, mode, s.Metrics)
	// The origins come before the snapshotter, whose start activates
	// the devices that read from them; an origin completing its cache
	// switches those devices through the snapshotter.
	var switcher atomic.Pointer[snapshotter.Snapshotter]
	if s.S3 != nil && cfg.S3.BlockPrefix != "" {
		o.status("attaching lazy origins")
		s.Origins, err = openOrigins(ctx, cfg, func(ctx context.Context, name, oldDev, newDev string) error {
			sn := switcher.Load()
			if sn == nil {
				return fmt.Errorf("origin %s: the snapshotter is not open yet: %w", name, errdefs.ErrUnavailable)
			}
			return sn.SwitchOrigin(ctx, name, oldDev, newDev)
		})
		if err != nil {
			return nil, err
		}
		snCfg.Origins = s.Origins
	}
	if s.S3 != nil && cfg.S3.LayerPrefix != "" {
		snCfg.Remote = layerstore.New(s.S3, S3Config(cfg))
		log.G(ctx).Infof("filling layers from s3://%s/%s", cfg.S3.Bucket, cfg.S3.LayerPrefix)
	}
	s.Guard = snapshotter.NewPoolGuard(s.Pool, cfg.Pool.FullThreshold)
	o.status("recovering: reconciling snapshots with pool %s", s.Pool.Name())
	if s.Snapshotter, err = snapshotter.New(ctx, snapshotter.Guard(s.Pool, s.Guard), s.Store, snCfg); err != nil {
		return nil, err
	}
	switcher.Store(s.Snapshotter)
	if mode != Daemon {
		return s, nil
	}

	s.Containerd = &importer.LazyContainerd{Address: cfg.Containerd.Address, NS: cfg.Containerd.Namespace}
	// Runs are bound to runCtx, cancelled by StopRuns at shutdown before
	// the database closes; an interrupted run resumes on the next start.
	runCtx, stopRuns := context.WithCancel(ctx)
	s.stopRuns = stopRuns
	icfg := importerConfig(cfg, s.Metrics)
	icfg.Pool = s.Pool.Name()
	if s.Origins != nil {
		icfg.Origins = s.Origins
		icfg.LazyDefault = cfg.Lazy.Default
	}
	s.Importer = importer.New(runCtx, icfg, s.S3, s.Containerd, s.Store)
	if err := registerCollectors(s.Metrics, s.Pool, s.Guard, s.Store, s.Importer, s.Origins); err != nil {
		return nil, err
	}
	return s, nil
}

// snapshotterConfig maps [snapshotter], [extract] and root_dir onto the
// snapshotter: the same for the daemon and the offline commands, but for
// the spares, which only the daemon keeps.
func snapshotterConfig(cfg config.Config, mode Mode, m *metrics.Metrics) snapshotter.Config {
	c := snapshotter.Config{
		BaseSize:       uint64(cfg.Snapshotter.BaseSize),
		FSType:         cfg.Snapshotter.FSType,
		DiscardBlocks:  cfg.Snapshotter.DiscardBlocks,
		Extract:        ExtractOptions(cfg),
		Spares:         cfg.Snapshotter.SpareDevices,
		RemoteFillWait: cfg.Snapshotter.RemoteFillWait.Duration(),
		// Offline, the database lock proves no daemon runs on this
		// root_dir: what is mounted there is a killed daemon's leftover.
		MountDir: mountDir(cfg),
	}
	if m != nil {
		c.RemoteFills = m.Fills(metrics.SourceLayer)
	}
	if mode != Daemon {
		// The daemon retires and refills spares, by its spare_devices.
		c.LeaveSpares = true
	}
	return c
}

// importerConfig maps [containerd] and [extract] onto the importer.
func importerConfig(cfg config.Config, m *metrics.Metrics) importer.Config {
	return importer.Config{
		Snapshotter:     cfg.Containerd.Snapshotter,
		Extract:         ExtractOptions(cfg),
		UnpackTimeout:   cfg.Extract.UnpackTimeout.Duration(),
		UnpackQueueSize: cfg.Extract.UnpackQueueSize,
		Fills:           m.Fills(metrics.SourceImage),
		MountDir:        mountDir(cfg),
		BlockPrefix:     cfg.S3.BlockPrefix,
	}
}

// markerPath is where this process records its holds of the pool's
// metadata snapshot (thinmeta.MarkerName).
func markerPath(cfg config.Config) string { return filepath.Join(cfg.RootDir, thinmeta.MarkerName) }

// releaseLeftoverHold releases a metadata snapshot a killed process of
// ours (a daemon, an offline gc) reserved and did not release: it would
// refuse every gc. Ours to release, as its marker says, because the
// caller holds the database lock alone, so no process of ours is reading
// now; a hold without our marker is someone else's. Then this process
// records its own holds there too.
func releaseLeftoverHold(ctx context.Context, cfg config.Config, pool string) {
	if _, err := thinmeta.ReleaseLeftover(ctx, pool, markerPath(cfg)); err != nil {
		log.G(ctx).WithError(err).Warn("could not release a metadata snapshot a killed daemon or gc left")
	}
	thinmeta.SetMarker(markerPath(cfg))
}

// reserveExistingIDs keeps the device id counter above every thin id the
// pool already holds, so a database that is new next to a used pool (one
// moved aside after corruption) never collides with the devices gc will
// report. Failing to read the pool metadata only costs the EEXIST retries
// Prepare already does.
func reserveExistingIDs(ctx context.Context, pool string, store *metadata.Store) {
	md, err := thinmeta.ReadPool(ctx, pool)
	if err != nil {
		log.G(ctx).WithError(err).Warn("could not list the pool's thin ids; new ids may collide with unknown devices")
		return
	}
	var max uint32
	for _, d := range md.Devices {
		if d.ID > max {
			max = d.ID
		}
	}
	if err := store.Update(func(tx *metadata.Tx) error { return tx.ReserveDeviceIDsThrough(max) }); err != nil {
		log.G(ctx).WithError(err).Warn("could not reserve the pool's thin ids")
	}
}

// StopRuns cancels the importer's runs and waits for them to stop (the
// daemon's shutdown, before the database closes). Safe without an
// importer and more than once.
func (s *Service) StopRuns() {
	if s.stopRuns != nil {
		s.stopRuns()
	}
	if s.Importer != nil {
		s.Importer.Wait()
	}
}

// Close stops what Open started, in the reverse order: runs, the
// containerd connection, the snapshotter, and the store last. Thin
// devices stay active, so containers keep running across restarts.
func (s *Service) Close() error {
	s.StopRuns()
	var errs []error
	if s.Containerd != nil {
		errs = append(errs, s.Containerd.Close())
	}
	if s.Snapshotter != nil {
		errs = append(errs, s.Snapshotter.Close())
	}
	if s.Origins != nil {
		// Served origins stop serving: their devices' reads of chunks
		// not yet cached fail until the next start attaches them again.
		errs = append(errs, s.Origins.Close())
	}
	if s.Store != nil {
		errs = append(errs, s.Store.Close())
	}
	return errors.Join(errs...)
}
