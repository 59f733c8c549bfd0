package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/service"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

var setupPoolCommand = &cli.Command{
	Name:  "setup-pool",
	Usage: "create the thin-pool, or re-create it from its files after a reboot; idempotent",
	Description: `Makes the [pool] of the config exist in device-mapper: with data_device
and metadata_device it uses those block devices; otherwise the loopback
files data_file and metadata_file under root_dir, created sparse at
data_size and metadata_size when absent. An active pool is left as it is
("found"); a pool whose storage exists but is not active (after a reboot)
is re-created from it with its thin devices kept. It then prints the
pool's usage. The daemon does the same at start, so running it by hand
is only needed to check the pool before the daemon runs. Needs root and
device-mapper with dm_thin_pool (modprobe dm_thin_pool).`,
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		// setup-pool takes no database lock, so it may run beside a
		// daemon: it must never deactivate devices for a check.
		cfg.Pool.CheckOnStart = false
		pool, result, err := service.OpenPool(c.Context, cfg)
		if err != nil {
			return err
		}
		switch result {
		case dmpool.Created:
			fmt.Printf("created pool %s\n", pool.Name())
		case dmpool.Recreated:
			fmt.Printf("re-created pool %s from its existing storage (thin devices kept)\n", pool.Name())
		default:
			fmt.Printf("found pool %s (already active)\n", pool.Name())
		}
		return printPool(c.Context, c.App.Writer, cfg, pool)
	},
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func printPool(ctx context.Context, w io.Writer, cfg config.Config, pool *dmpool.Pool) error {
	st, err := pool.Status(ctx)
	if err != nil {
		return err
	}
	printPoolStatus(w, cfg, adminwire.PoolStatus(st), offlinePoolFull(cfg, st))
	return nil
}

func printPoolStatus(w io.Writer, cfg config.Config, st admin.PoolStatus, full poolFull) {
	if cfg.Pool.DataDevice != "" {
		fmt.Fprintf(w, "  data:      %s\n  metadata:  %s\n", cfg.Pool.DataDevice, cfg.Pool.MetadataDevice)
	} else {
		fmt.Fprintf(w, "  data:      %s (loopback file)\n  metadata:  %s (loopback file)\n", cfg.Pool.DataFile, cfg.Pool.MetadataFile)
	}
	fmt.Fprintf(w, "  block:     %s\n", units.Bytes(st.DataBlockSize))
	fmt.Fprintf(w, "  data:      %d/%d blocks used (%s of %s, %s)\n", st.UsedDataBlocks, st.TotalDataBlocks,
		units.Bytes(st.UsedDataBlocks*st.DataBlockSize), units.Bytes(st.TotalDataBlocks*st.DataBlockSize), units.Percent(st.UsedDataBlocks, st.TotalDataBlocks))
	fmt.Fprintf(w, "  metadata:  %d/%d blocks used (%s of %s, %s)\n", st.UsedMetaBlocks, st.TotalMetaBlocks,
		units.Bytes(st.UsedMetaBytes()), units.Bytes(st.TotalMetaBytes()), units.Percent(st.UsedMetaBlocks, st.TotalMetaBlocks))
	fmt.Fprintf(w, "  mode:      %s\n", poolMode(st))
	work := "accepted"
	if full.refusing {
		work = "REFUSED (devicemapper pool is full, cannot create device); free space with 'flyio-image-manager gc' or remove images"
	}
	fmt.Fprintf(w, "  full at:   %d%% of data or metadata (full_threshold); new snapshots and imports: %s\n", full.threshold, work)
}

// poolFull is the pool-full guard's verdict that status prints: the
// threshold ([pool] full_threshold) and whether new work is refused.
type poolFull struct {
	threshold int
	refusing  bool
}

// offlinePoolFull is the verdict without a daemon: the guard's rule on
// the pool's status, by the configuration's threshold.
func offlinePoolFull(cfg config.Config, st dmpool.Status) poolFull {
	return poolFull{threshold: cfg.Pool.FullThreshold,
		refusing: snapshotter.FullError(cfg.Pool.Name, "new snapshots and imports", st, cfg.Pool.FullThreshold) != nil}
}

var poolCommand = &cli.Command{
	Name:  "pool",
	Usage: "operator actions on the thin-pool",
	Description: `Actions an operator takes on the live thin-pool by hand, through the
same ioctls the daemon uses (no dmsetup needed). Today: release-metadata-snap.`,
	Subcommands: []*cli.Command{{
		Name:  "release-metadata-snap",
		Usage: "release a metadata snapshot left held on the pool (gc, status and diag refuse to use one they did not take)",
		Description: `A held metadata snapshot is left by a reserve_metadata_snap nobody released
(thin_dump -m, a failed release, a crash inside a read). Its view of the
pool is frozen when it was taken, so gc refuses to judge anything by it.
Release it only when no thin_dump, thin_ls or other reader is using it.`,
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			was, err := thinmeta.Release(cfg.Pool.Name)
			if err != nil {
				return err
			}
			if was == "-" {
				fmt.Fprintf(c.App.Writer, "pool %s holds no metadata snapshot\n", cfg.Pool.Name)
				return nil
			}
			fmt.Fprintf(c.App.Writer, "released the metadata snapshot of pool %s (root block %s)\n", cfg.Pool.Name, was)
			return nil
		},
	}},
}
