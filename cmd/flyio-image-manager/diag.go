package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/diag"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
)

// journalUnit is the systemd unit whose journal holds the daemon's log
// when the daemon is not running.
const journalUnit = "flyio-image-manager"

var diagCommand = &cli.Command{
	Name:  "diag",
	Usage: "write a diagnostics bundle (.tar.gz) for a bug report",
	Description: `The bundle holds: version, kernel (uname, /proc/version, cmdline),
device-mapper driver version, pool table and status and its thin devices,
the configuration with secrets redacted, the daemon's environment
(AWS_* and secret-like values redacted, names kept), the daemon's recent
log, bbolt statistics, process-image runs, a gc dry run, the images and
snapshot tree, and the mounts of the pool's devices. The daemon gathers
it when it answers on admin_address; otherwise diag gathers what it can
itself (the log then comes from journalctl -u ` + journalUnit + `).
A part that cannot be gathered is written as NAME.error, never skipped
silently. MANIFEST.txt lists the contents.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the bundle to `FILE` (or DIRECTORY; default flyio-image-manager-diag-<host>-<UTC time>.tar.gz in the current directory)"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		host, _ := os.Hostname()
		out := c.String("output")
		if out == "" {
			out = diag.FileName(host, now)
		} else if fi, err := os.Stat(out); err == nil && fi.IsDir() {
			out = filepath.Join(out, diag.FileName(host, now))
		}
		files := gatherDiag(c.Context, cfg, now)
		// Our own environment may hold the same credentials the daemon's
		// does; scrub them from whatever the daemon sent too.
		files = diag.NewScrubber(os.Environ()).Files(files)
		if err := diag.WriteFile(out, files, now); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "wrote %s\n\n%s", out, diag.Manifest(files))
		return nil
	},
}

// gatherDiag asks the daemon for its diagnostics, and gathers them here
// when it does not answer.
func gatherDiag(ctx context.Context, cfg config.Config, now time.Time) []diag.File {
	note := fmt.Sprintf("bundle written by flyio-image-manager %s diag (pid %d) at %s\n", version, os.Getpid(), now.Format(time.RFC3339))
	wire, err := admin.NewClient(cfg.AdminAddress).Diag(ctx)
	if err == nil {
		note += fmt.Sprintf("gathered by the daemon answering on %s\n", cfg.AdminAddress)
		return append([]diag.File{{Name: "diag-command.txt", Data: []byte(note)}}, adminwire.DomainDiagFiles(wire)...)
	}
	note += fmt.Sprintf("the daemon did not answer on %s (%v); gathered by the diag command itself, "+
		"so environment.txt is the diag command's and the log comes from the journal\n", cfg.AdminAddress, err)
	files := diag.Collect(ctx, offlineDiagSources(ctx, cfg, err))
	return append([]diag.File{{Name: "diag-command.txt", Data: []byte(note)}}, files...)
}

// offlineDiagSources are the parts diag can gather with no daemon: the
// metadata opened read-only (refused, with a note, if a daemon that does
// not answer still holds it), through service as gc --dry-run opens it,
// so that its reads of the pool's metadata snapshot record their hold.
func offlineDiagSources(ctx context.Context, cfg config.Config, daemonErr error) []diag.Source {
	in := diag.Inputs{
		GatheredBy: "diag command (daemon not answering: " + daemonErr.Error() + ")",
		Version:    version,
		Pool:       cfg.Pool.Name,
		Config:     cfg,
		Environ:    os.Environ(),
		Log:        diag.Journal("daemon.log", journalUnit, 2000),
	}
	var store *metadata.Store
	svc, err := service.Open(ctx, cfg, service.Inspect)
	if err != nil {
		in.StoreErr = err
	} else {
		// Closed when the process exits: diag writes the bundle and ends.
		store = svc.Store
		in.Store = store
		in.Runs = func(context.Context) (any, error) {
			var runs []*metadata.Run
			err := store.View(func(tx *metadata.Tx) (err error) { runs, err = tx.Runs(); return err })
			return runs, err
		}
	}
	in.GC = func(ctx context.Context) (*gc.Report, error) {
		return offlineGC(ctx, cfg, admin.GCRequest{DryRun: true, MinAge: gc.DefaultMinAge.String()})
	}
	if store != nil {
		inv := gc.Inventory{Store: store, Pool: cfg.Pool.Name, Namespace: cfg.Containerd.Namespace, Usage: gc.OfflineUsage(cfg.Pool.Name)}
		in.Extra = []diag.Source{
			diag.JSON("images.json", func(ctx context.Context) (any, error) {
				imgs, err := inv.Images(ctx)
				if err != nil {
					return nil, err
				}
				return adminwire.Images(imgs), nil
			}),
			diag.JSON("snapshots.json", func(ctx context.Context) (any, error) {
				tree, err := inv.Snapshots(ctx)
				if err != nil {
					return nil, err
				}
				return adminwire.SnapshotTree(tree), nil
			}),
		}
	}
	return diag.Sources(in)
}
