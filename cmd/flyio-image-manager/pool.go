package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/admin"
	"github.com/superfly/flyio-image-manager/internal/config"
	"github.com/superfly/flyio-image-manager/internal/daemon"
)

var setupPoolCommand = &cli.Command{
	Name:  "setup-pool",
	Usage: "create the thin-pool, or re-create it from its files after a reboot; idempotent",
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		pool, result, err := daemon.OpenPool(c.Context, cfg)
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

var statusCommand = &cli.Command{
	Name:  "status",
	Usage: "print the pool's usage and state, and the daemon's records and runs when it is running",
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		st, err := admin.NewClient(cfg.AdminAddress).Status(c.Context)
		if errors.Is(err, admin.ErrDaemonNotRunning) {
			fmt.Fprintln(c.App.Writer, "daemon: not running")
			pool, err := dmpool.Inspect(c.Context, daemon.PoolConfig(cfg))
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "pool %s\n", pool.Name())
			return printPool(c.Context, c.App.Writer, cfg, pool)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "daemon: running (%s)\npool %s\n", cfg.AdminAddress, st.Pool)
		printPoolStatus(c.App.Writer, cfg, st.PoolState)
		fmt.Fprintf(c.App.Writer, "  snapshots: %s\n  devices:   %s\n  images:    %d imported\n", counts(st.Snapshots), counts(st.Devices), st.Images)
		for _, r := range st.Runs {
			fmt.Fprintf(c.App.Writer, "  run %s: %s s3://%s/%s %d/%d bytes, %d entries\n", r.ID, r.State, r.Bucket, r.Key, r.CompressedBytes, r.Size, r.Entries)
		}
		return nil
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
	printPoolStatus(w, cfg, st)
	return nil
}

func printPoolStatus(w io.Writer, cfg config.Config, st dmpool.Status) {
	if cfg.Pool.DataDevice != "" {
		fmt.Fprintf(w, "  data:      %s\n  metadata:  %s\n", cfg.Pool.DataDevice, cfg.Pool.MetadataDevice)
	} else {
		fmt.Fprintf(w, "  data:      %s (loopback file)\n  metadata:  %s (loopback file)\n", cfg.Pool.DataFile, cfg.Pool.MetadataFile)
	}
	fmt.Fprintf(w, "  block:     %s\n", config.Size(st.DataBlockSize))
	fmt.Fprintf(w, "  data:      %d/%d blocks used (%s of %s, %.1f%%)\n", st.UsedDataBlocks, st.TotalDataBlocks,
		config.Size(st.UsedDataBlocks*st.DataBlockSize), config.Size(st.TotalDataBlocks*st.DataBlockSize), pct(st.UsedDataBlocks, st.TotalDataBlocks))
	fmt.Fprintf(w, "  metadata:  %d/%d blocks used (%.1f%%)\n", st.UsedMetaBlocks, st.TotalMetaBlocks, pct(st.UsedMetaBlocks, st.TotalMetaBlocks))
	state := "rw"
	switch {
	case st.Fail:
		state = "FAILED"
	case st.ReadOnly:
		state = "read-only"
	case st.OutOfDataSpace:
		state = "out of data space"
	}
	if st.NeedsCheck {
		state += ", needs_check"
	}
	fmt.Fprintf(w, "  state:     %s\n", state)
	work := "accepted"
	if err := daemon.FullError(cfg.Pool.Name, "new snapshots and imports", st, cfg.Pool.FullThreshold); err != nil {
		work = "REFUSED (devicemapper pool is full, cannot create device); free space with 'flyio-image-manager gc' or remove images"
	}
	fmt.Fprintf(w, "  full at:   %d%% of data or metadata (full_threshold); new snapshots and imports: %s\n", cfg.Pool.FullThreshold, work)
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
