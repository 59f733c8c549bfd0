package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/dmpool"
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
	Usage: "print the pool's usage and state",
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		pool, _, err := daemon.OpenPool(c.Context, cfg)
		if err != nil {
			return err
		}
		return printPool(c.Context, c.App.Writer, cfg, pool)
	},
}

func printPool(ctx context.Context, w io.Writer, cfg config.Config, pool *dmpool.Pool) error {
	st, err := pool.Status(ctx)
	if err != nil {
		return err
	}
	if cfg.Pool.DataDevice != "" {
		fmt.Fprintf(w, "  data:      %s\n  metadata:  %s\n", cfg.Pool.DataDevice, cfg.Pool.MetadataDevice)
	} else {
		fmt.Fprintf(w, "  data:      %s (loopback file)\n  metadata:  %s (loopback file)\n", cfg.Pool.DataFile, cfg.Pool.MetadataFile)
	}
	fmt.Fprintf(w, "  device:    %s\n", pool.DevicePath())
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
	return nil
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
