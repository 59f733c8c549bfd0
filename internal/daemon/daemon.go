// Package daemon wires the pool, the metadata store and the snapshotter
// together and serves containerd's snapshots API on a unix socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/internal/admin"
	"github.com/superfly/flyio-image-manager/internal/config"
	"github.com/superfly/flyio-image-manager/internal/logring"
	"github.com/superfly/flyio-image-manager/internal/metrics"
	"github.com/superfly/flyio-image-manager/internal/thinmeta"
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
	}
}

// OpenPool opens (creating or re-creating) the pool of cfg. For a
// loopback pool it first makes the directories of its files: dmpool
// creates missing files but not their directory, and the default
// <root_dir>/pool/ does not exist on a fresh host.
func OpenPool(ctx context.Context, cfg config.Config) (*dmpool.Pool, dmpool.OpenResult, error) {
	pc := PoolConfig(cfg)
	if pc.DataDevice == "" {
		for _, f := range []string{pc.DataFile, pc.MetadataFile} {
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				return nil, "", fmt.Errorf("pool %q: %w", pc.Name, err)
			}
		}
	}
	return dmpool.Open(ctx, pc)
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
	if result != dmpool.Created {
		reserveExistingIDs(ctx, pool.Name(), store)
	}

	// The S3 client comes before the snapshotter, which fills layers
	// through it when a layer store is configured.
	s3, err := s3fetch.New(ctx, cfg.S3)
	if err != nil {
		return err
	}
	m := metrics.New()
	snCfg := snapshotter.Config{
		BaseSize:    uint64(cfg.Snapshotter.BaseSize),
		FSType:      cfg.Snapshotter.FSType,
		BlockMounts: cfg.Snapshotter.MountType == "block",
		Extract:     cfg.Extract.Options(),
		Spares:      cfg.Snapshotter.SpareDevices,
		RemoteFills: m.Fills(metrics.SourceLayer),
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
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(m.Snapshotter(sn)))
	al, err := listen(cfg.AdminAddress, 0o600)
	if err != nil {
		return err
	}
	adminSrv := &http.Server{Handler: admin.Handler(&backend{
		cfg: cfg, pool: pool, store: store, importer: imp, sn: sn, cd: cd, guard: guard,
		version: opts.Version, started: started,
	})}

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
	adminSrv.Close()
	stopRuns()
	imp.Wait()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		log.G(ctx).Warn("requests still running after 30s; stopping anyway")
		srv.Stop()
	}
	return nil
}

// listen opens a unix socket at path with mode, replacing a stale socket
// left by a daemon that died. Only called with the database lock held, so
// the socket cannot belong to a live daemon of this root_dir.
func listen(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
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
