// Package daemon wires the pool, the metadata store and the snapshotter
// together and serves containerd's snapshots API on a unix socket.
package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/internal/fillmount"
	"github.com/superfly/flyio-image-manager/internal/logring"
	"github.com/superfly/flyio-image-manager/metrics"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/layerstore"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// MetadataPath is where the metadata database of a root_dir lives.
func MetadataPath(cfg config.Config) string {
	return filepath.Join(cfg.RootDir, "metadata.db")
}

// PoolConfig translates the [pool] section for dmpool.
func PoolConfig(cfg config.Config) dmpool.Config {
	return dmpool.Config{
		Name:           cfg.Pool.Name,
		DataDevice:     cfg.Pool.DataDevice,
		MetadataDevice: cfg.Pool.MetadataDevice,
		DataFile:       cfg.Pool.DataFile,
		MetadataFile:   cfg.Pool.MetadataFile,
		DataSize:       int64(cfg.Pool.DataSize),
		MetadataSize:   int64(cfg.Pool.MetadataSize),
		BlockSize:      uint32(cfg.Pool.BlockSize),
		LowWaterMark:   cfg.Pool.LowWaterMark,
		// The zero value of dmpool zeroes: only an explicit false skips it.
		SkipBlockZeroing: !cfg.Pool.ZeroNewBlocks,
		CheckOnStart:     cfg.Pool.CheckOnStart,
	}
}

// OpenPool opens (creating or re-creating) the pool of cfg. dmpool makes
// the directories of a new loopback pool's files itself (the default
// <root_dir>/pool/ does not exist on a fresh host), and only when both
// files are absent: one without the other stops the start, changing
// nothing. setup-pool, gc and the daemon all open the pool here.
func OpenPool(ctx context.Context, cfg config.Config) (*dmpool.Pool, dmpool.OpenResult, error) {
	return dmpool.Open(ctx, PoolConfig(cfg))
}

// Options are what the daemon is told besides its configuration.
type Options struct {
	// Version is the binary's version, reported by status.
	Version string
}

// Run serves until ctx is cancelled (SIGTERM/SIGINT), then stops
// accepting requests, lets running ones finish and closes the database.
// Thin devices stay active, so containers keep running across restarts.
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	if err := SetupLogging(cfg); err != nil {
		return err
	}
	// Before anything logs: diag bundles the last lines from memory.
	logring.Install(log.L.Logger)
	started := time.Now()
	// The database lock comes first: a second daemon on the same root
	// must fail before it touches the pool or the socket.
	store, err := metadata.Open(MetadataPath(cfg), metadata.Options{})
	if err != nil {
		return err
	}
	defer store.Close()

	notify := newNotifier(ctx)
	notify.Status("opening pool %s", cfg.Pool.Name)
	pool, result, err := OpenPool(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	log.G(ctx).Infof("pool %s %s", pool.Name(), result)
	// A metadata snapshot a previous daemon reserved and did not release
	// (killed inside a read) would refuse every gc: ours to release, as
	// its marker says; we hold the database lock, so no daemon of ours
	// is reading now. A hold without our marker is someone else's.
	marker := filepath.Join(cfg.RootDir, thinmeta.MarkerName)
	if _, err := thinmeta.ReleaseLeftover(ctx, pool.Name(), marker); err != nil {
		log.G(ctx).WithError(err).Warn("could not release a metadata snapshot a previous daemon left")
	}
	thinmeta.SetMarker(marker)
	if result != dmpool.Created {
		reserveExistingIDs(ctx, pool.Name(), store)
	}

	// The S3 client comes before the snapshotter, which fills layers
	// through it when a layer store is configured.
	s3, err := s3fetch.New(ctx, cfg.S3)
	if err != nil {
		return err
	}
	if cfg.Snapshotter.MountType == "block" {
		log.G(ctx).Warn(`snapshotter.mount_type = "block" is retired and now means "fs": mounts are the thin device's ext4/xfs filesystem, whose Source microVM runtimes attach (docs/microvm.md); remove the key`)
	}
	m := metrics.New()
	snCfg := snapshotter.Config{
		BaseSize:       uint64(cfg.Snapshotter.BaseSize),
		FSType:         cfg.Snapshotter.FSType,
		DiscardBlocks:  cfg.Snapshotter.DiscardBlocks,
		Extract:        cfg.Extract.Options(),
		Spares:         cfg.Snapshotter.SpareDevices,
		RemoteFillWait: cfg.Snapshotter.RemoteFillWait.Duration(),
		RemoteFills:    m.Fills(metrics.SourceLayer),
		MountDir:       fillmount.Dir(cfg.RootDir),
	}
	if cfg.S3.LayerPrefix != "" {
		snCfg.Remote = layerstore.New(s3, cfg.S3)
		log.G(ctx).Infof("filling layers from s3://%s/%s", cfg.S3.Bucket, cfg.S3.LayerPrefix)
	}
	guard := NewPoolGuard(pool, cfg.Pool.FullThreshold)
	notify.Status("recovering: reconciling snapshots with pool %s", pool.Name())
	sn, err := snapshotter.New(ctx, guardedPool{Pool: pool, guard: guard}, store, snCfg)
	if err != nil {
		return err
	}
	defer sn.Close()

	cd := &importer.LazyContainerd{Address: cfg.Containerd.Address, NS: cfg.Containerd.Namespace}
	defer cd.Close()
	// Runs are bound to runCtx, cancelled at shutdown before the database
	// closes; an interrupted run resumes on the next start.
	runCtx, stopRuns := context.WithCancel(ctx)
	defer stopRuns()
	imp := importer.New(runCtx, importer.Config{
		Snapshotter:     cfg.Containerd.Snapshotter,
		Extract:         cfg.Extract.Options(),
		UnpackTimeout:   cfg.Extract.UnpackTimeout.Duration(),
		UnpackQueueSize: cfg.Extract.UnpackQueueSize,
		Fills:           m.Fills(metrics.SourceImage),
		MountDir:        fillmount.Dir(cfg.RootDir),
	}, s3, cd, store)
	if err := registerCollectors(m, pool, guard, store, imp); err != nil {
		return err
	}
	stopObservability, err := serveObservability(ctx, cfg, m)
	if err != nil {
		return err
	}
	defer stopObservability()

	l, err := listen(cfg.Address, 0o660)
	if err != nil {
		return err
	}
	srv := newGRPCServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(m.Snapshotter(sn)))
	al, err := listen(cfg.AdminAddress, 0o600)
	if err != nil {
		return err
	}
	adminSrv := newAdminServer(admin.Handler(&backend{
		cfg: cfg, pool: pool, store: store, importer: imp, sn: sn, cd: cd, guard: guard,
		version: opts.Version, started: started,
	}))

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(l) }()
	go func() { errc <- adminSrv.Serve(al) }()
	log.G(ctx).Infof("serving snapshots API on %s, admin API on %s", cfg.Address, cfg.AdminAddress)
	// Runs a previous daemon left unfinished start over now that the
	// snapshots API (which they go through, via containerd) is served.
	// Resume only starts them: it never waits for containerd, which
	// systemd starts after our READY.
	notify.Status("resuming %d process-image runs", unfinishedRuns(store))
	if err := imp.Resume(ctx); err != nil {
		log.G(ctx).WithError(err).Error("could not resume unfinished process-image runs")
	}
	// Both sockets were listening since listen returned (connections
	// queue until Serve accepts them) and recovery is done: containerd,
	// started after READY, finds the snapshotter serving.
	notify.Ready(fmt.Sprintf("serving snapshots API on %s, admin API on %s", cfg.Address, cfg.AdminAddress))
	go notify.Watchdog(ctx, func(ctx context.Context) error {
		_, err := pool.Status(ctx)
		return err
	})

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	notify.Stopping()
	log.G(ctx).Info("shutting down")
	// The admin API drains alongside the snapshots API; both are done
	// before Run returns and the database closes.
	adminDrained := make(chan struct{})
	go func() { adminSrv.drain(ctx, 30*time.Second, 30*time.Second); close(adminDrained) }()
	stopRuns()
	imp.Wait()
	drainGRPC(ctx, srv, 30*time.Second, 30*time.Second)
	<-adminDrained
	return nil
}

// newGRPCServer makes the snapshots API server. WaitForHandlers: Stop,
// after the drain deadline, cancels the calls still running and waits
// for their handlers to return, so nothing works on the pool after Run
// returned and the database closed.
func newGRPCServer() *grpc.Server { return grpc.NewServer(grpc.WaitForHandlers(true)) }

// drainGRPC stops srv: it lets running calls finish for up to drain,
// then cancels them and waits up to cancel more for their handlers to
// return (a handler in the middle of a device-mapper step finishes the
// step). A handler that does not return even then is abandoned, logged:
// the journal makes whatever it was doing safe at the next start.
func drainGRPC(ctx context.Context, srv *grpc.Server, drain, cancel time.Duration) {
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		return
	case <-time.After(drain):
	}
	log.G(ctx).Warnf("snapshots API calls still running after %s; cancelling them", drain)
	go srv.Stop()
	select {
	case <-stopped:
	case <-time.After(cancel):
		log.G(ctx).Errorf("snapshots API calls still running %s after they were cancelled; stopping without them", cancel)
	}
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
