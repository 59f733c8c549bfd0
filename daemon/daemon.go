// Package daemon serves what service.Open builds: containerd's snapshots
// API and the admin API on unix sockets, metrics and pprof, with
// sd_notify, logging and a draining shutdown.
package daemon

import (
	"context"
	"fmt"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/internal/logring"
	"github.com/superfly/flyio-image-manager/service"
)

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
	notify := newNotifier(ctx)
	// service builds the store (its lock first: a second daemon on the
	// same root fails before it touches the pool or the socket), the
	// pool, the guard, the S3 client, the snapshotter (recovery), the
	// importer and the metrics.
	svc, err := service.Open(ctx, cfg, service.Daemon, service.WithStatus(notify.Status))
	if err != nil {
		return err
	}
	defer svc.Close()
	pool, store, sn, imp, m := svc.Pool, svc.Store, svc.Snapshotter, svc.Importer, svc.Metrics
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
	// Before the admin API serves, so that no publish is under way.
	if err := importer.RemovePublishViews(ctx, sn); err != nil {
		log.G(ctx).WithError(err).Error("publish-base views a previous daemon left are still there")
	}
	b := &backend{
		cfg: cfg, pool: pool, store: store, importer: imp, sn: sn, cd: svc.Containerd, guard: svc.Guard, svc: svc,
		version: opts.Version, started: started,
	}
	adminSrv := newAdminServer(admin.Handler(b))

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
	// Stopped and waited for before svc.Close (deferred above, so run
	// after this) on every return: a sweep must not run on a closed
	// service.
	sweepCtx, stopSweep := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		if svc.Origins != nil {
			b.sweepOriginsEvery(sweepCtx, originSweepInterval, b.sweepOrigins)
		}
	}()
	defer func() { stopSweep(); <-swept }()
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
	svc.StopRuns()
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
