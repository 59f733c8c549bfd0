package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
)

var gcCommand = &cli.Command{
	Name:  "gc",
	Usage: "list (--dry-run) or remove (--force) leftover thin devices, records and snapshots",
	Description: `gc finds: thin devices in the pool with no record, device records whose thin
device is gone, orphaned and quarantined devices, snapshots of failed or
abandoned process-image runs and interrupted remote layer fills, and (when
containerd answers on [containerd] address) our snapshots containerd has no
record of. Each is listed with the space its device maps.

--force removes them, snapshots children first; a snapshot live snapshots
depend on, a template, or a device a snapshot uses is never removed.
Quarantined devices (set aside because a record could not be decoded or a
device could not be activated at start: their data may be recoverable)
are listed but kept unless --include-quarantined is given too.

gc reads its records first and the pool after, from a metadata snapshot
it takes itself; it refuses to use one somebody else holds (see 'pool
release-metadata-snap'). A record whose device is not in that view is
removed only after the live pool confirms the device is gone, and a
snapshot containerd does not know only if no namespace uses it, asked
again just before the removal.
When the daemon answers on admin_address it does the work itself, under
its own locking; otherwise gc opens the metadata and the pool itself, and
refuses if a daemon holds the metadata.`,
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "dry-run", Usage: "only list what would be removed"},
		&cli.BoolFlag{Name: "force", Usage: "remove it"},
		&cli.BoolFlag{Name: "include-quarantined", Usage: "with --force, also remove quarantined devices (their data may be recoverable)"},
		jsonFlag,
		&cli.StringFlag{Name: "min-age", Value: gc.DefaultMinAge.String(), Usage: "ignore snapshots changed more recently than this `DURATION`, seconds or a duration such as 300, 5m, 1h30m (containerd records a snapshot only after we create it)"},
	},
	Action: func(c *cli.Context) error {
		if c.Bool("dry-run") == c.Bool("force") {
			return fmt.Errorf("gc: give exactly one of --dry-run (list) or --force (remove)")
		}
		// The same codec as the config's durations: seconds or a duration.
		minAge, err := units.ParseSeconds(c.String("min-age"))
		if err != nil {
			return fmt.Errorf("gc: --min-age: %w", err)
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		req := admin.GCRequest{DryRun: c.Bool("dry-run"), MinAge: minAge.Duration().String(), IncludeQuarantined: c.Bool("include-quarantined")}
		rep, err := admin.NewClient(cfg.AdminAddress).GC(c.Context, req)
		if errors.Is(err, admin.ErrDaemonNotRunning) {
			var off *gc.Report
			off, err = offlineGC(c.Context, cfg, req)
			rep = adminwire.GCReport(off)
		}
		if err != nil {
			return err
		}
		if c.Bool("json") {
			if err := printJSON(c.App.Writer, rep); err != nil {
				return err
			}
		} else if err := adminwire.DomainGCReport(rep).WriteTable(c.App.Writer); err != nil {
			return err
		}
		if rep.Failed > 0 {
			return fmt.Errorf("gc: %d item(s) could not be removed", rep.Failed)
		}
		return nil
	},
}

// offlineGC does the gc with no daemon running: service opens the
// metadata read-only for a dry run (service.Inspect) and, to remove, the
// pool and the same guarded snapshotter the daemon runs
// (service.Offline). The metadata's lock is what refuses it while a
// daemon runs.
func offlineGC(ctx context.Context, cfg config.Config, req admin.GCRequest) (*gc.Report, error) {
	opts, err := adminwire.GCOptions(req)
	if err != nil {
		return nil, err
	}
	mode := service.Offline
	if req.DryRun {
		mode = service.Inspect
	}
	svc, err := service.Open(ctx, cfg, mode)
	if errors.Is(err, metadata.ErrLocked) {
		return nil, fmt.Errorf("gc: the daemon's admin socket %s does not answer, but a daemon holds the metadata; "+
			"gc will not work beside it (is it still starting?): %w", cfg.AdminAddress, err)
	}
	if err != nil {
		return nil, err
	}
	defer svc.Close()
	var cd gc.Containerd
	if cfg.Containerd.Address != "" {
		var cli *client.Client
		defer func() {
			if cli != nil {
				cli.Close()
			}
		}()
		cd = gc.NewContainerd(func(ctx context.Context) (*client.Client, error) {
			if cli != nil {
				return cli, nil
			}
			cli, err = client.New(cfg.Containerd.Address)
			return cli, err
		}, cfg.Containerd.Snapshotter)
	}
	if req.DryRun {
		return gc.Plan(ctx, cfg.Pool.Name, service.PoolReader(cfg.Pool.Name), svc.Store, cd, opts)
	}
	rep, err := gc.Plan(ctx, svc.Pool.Name(), service.PoolReader(svc.Pool.Name()), svc.Store, cd, opts)
	if err != nil {
		return nil, err
	}
	gc.Apply(ctx, rep, svc.Snapshotter, cd)
	return rep, nil
}

var deleteImageCommand = &cli.Command{
	Name:  "delete-image",
	Usage: "remove an imported image (process-image) and its base device; refused while snapshots depend on it",
	Description: `Removes the image's record and its containerd image, and then its base
snapshot and thin device unless another imported image shares them. It
is refused while any snapshot (a container, a view) is built on the base:
'images --json' lists the dependants; remove those containers first.
The daemon must be running.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "image-id", Required: true, Usage: "the image `ID` process-image recorded"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		res, err := admin.NewClient(cfg.AdminAddress).DeleteImage(c.Context, c.String("image-id"))
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "deleted image %s (%s); base %s", res.Image.ID, res.Image.Ref, res.Image.ChainID)
		switch {
		case len(res.Kept) > 0:
			fmt.Fprintf(c.App.Writer, " kept (%v): a containerd namespace still uses it; gc removes it once none does\n", res.Kept)
		case len(res.Snapshots) == 0:
			fmt.Fprintln(c.App.Writer, " kept: another imported image uses it")
		default:
			fmt.Fprintf(c.App.Writer, " removed (%v)\n", res.Snapshots)
		}
		return nil
	},
}
