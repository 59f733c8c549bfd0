package daemon

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// backend implements the admin API over the daemon's parts.
type backend struct {
	cfg      config.Config
	pool     *dmpool.Pool
	store    *metadata.Store
	importer *importer.Importer
	sn       *snapshotter.Snapshotter
	cd       *importer.LazyContainerd
	guard    *snapshotter.PoolGuard
	// svc sweeps the lazily-backed origins nothing uses (SweepOrigins)
	// and has them (svc.Origins, nil without block_prefix).
	svc *service.Service
	// version and started are reported by status.
	version string
	started time.Time

	// gcMu runs one gc (or delete-image) at a time.
	gcMu sync.Mutex
}

func (b *backend) ProcessImage(ctx context.Context, req admin.ProcessImageRequest) (admin.Run, error) {
	if err := b.guard.Check(ctx, "process-image "+req.Key); err != nil {
		return admin.Run{}, err
	}
	r, err := b.importer.Submit(ctx, adminwire.ImportRequest(req))
	return adminwire.Run(r), err
}

func (b *backend) Run(id string) (admin.Run, error) {
	r, err := b.importer.Get(id)
	return adminwire.Run(r), err
}

func (b *backend) Runs() ([]admin.Run, error) {
	rs, err := b.importer.List()
	return adminwire.Runs(rs), err
}

func (b *backend) Cancel(ctx context.Context, id string) (admin.Run, error) {
	r, err := b.importer.Cancel(ctx, id)
	return adminwire.Run(r), err
}

func (b *backend) Queues() []admin.QueueInfo { return adminwire.Queues(b.importer.Queues()) }

// recentFinishedRuns is how many finished runs status shows.
const recentFinishedRuns = 10

func (b *backend) daemonInfo() admin.DaemonInfo {
	return admin.DaemonInfo{
		Version: b.version, PID: os.Getpid(), Started: b.started.UTC(),
		UptimeSeconds: time.Since(b.started).Seconds(),
		Address:       b.cfg.Address, AdminAddress: b.cfg.AdminAddress,
		MetricsAddress: b.cfg.MetricsAddress, DebugAddress: b.cfg.DebugAddress,
	}
}

func (b *backend) Status(ctx context.Context) (admin.Status, error) {
	st := admin.Status{
		Daemon: b.daemonInfo(), Pool: b.pool.Name(), Snapshots: map[string]int{}, Devices: map[string]int{},
		FullThreshold: b.guard.Threshold(), Queues: adminwire.Queues(b.importer.Queues()),
	}
	ps, err := b.pool.Status(ctx)
	if err != nil {
		return st, err
	}
	st.PoolState = adminwire.PoolStatus(ps)
	if err := snapshotter.FullError(b.pool.Name(), "new snapshots and imports", ps, b.guard.Threshold()); err != nil {
		st.Refusing = err.Error()
	}
	err = b.store.View(func(tx *metadata.Tx) error {
		var err error
		if st.Trouble, err = poolTroubleStatus(tx, ps.Trouble()); err != nil {
			return err
		}
		tx.Snapshots(func(_ string, s *metadata.Snapshot, err error) error {
			if err == nil {
				st.Snapshots[s.Kind.String()]++
			}
			return nil
		})
		tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil {
				st.Devices[string(d.State)]++
			}
			return nil
		})
		imgs, err := tx.Images()
		st.Images = len(imgs)
		return err
	})
	if probes, perr := b.sn.Probes(ctx); perr == nil {
		for _, p := range probes {
			st.GCProbes = append(st.GCProbes, admin.GCProbe{Name: p.Name, ThinID: p.ID, OpenCount: p.OpenCount})
		}
	}
	if b.svc != nil && b.svc.Origins != nil {
		st.Origins = adminwire.Origins(b.svc.Origins.Status())
	}
	recent, _ := b.importer.Recent(recentFinishedRuns)
	st.RecentRuns = adminwire.Runs(recent)
	for _, r := range st.RecentRuns {
		if !r.State.Finished() {
			st.Runs = append(st.Runs, r)
		}
	}
	return st, err
}

// containerd is gc's view of the configured containerd, or nil when none
// is configured.
func (b *backend) containerd() gc.Containerd {
	if b.cfg.Containerd.Address == "" {
		return nil
	}
	return gc.NewContainerd(b.cd.Client, b.cfg.Containerd.Snapshotter)
}

// GC plans, and unless req.DryRun applies, a gc through the running
// snapshotter, whose metadata transactions serialise it with Prepare and
// Remove.
func (b *backend) GC(ctx context.Context, req admin.GCRequest) (admin.GCReport, error) {
	rep, err := b.gc(ctx, req)
	return adminwire.GCReport(rep), err
}

func (b *backend) gc(ctx context.Context, req admin.GCRequest) (*gc.Report, error) {
	opts, err := adminwire.GCOptions(req)
	if err != nil {
		return nil, err
	}
	b.gcMu.Lock()
	defer b.gcMu.Unlock()
	cd := b.containerd()
	rep, err := gc.Plan(ctx, b.pool.Name(), service.PoolReader(b.pool.Name()), b.store, cd, opts)
	if err != nil || req.DryRun {
		return rep, err
	}
	gc.Apply(ctx, rep, b.sn, cd)
	b.sweepOrigins(ctx)
	return rep, nil
}
