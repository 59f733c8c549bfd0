package main

import (
	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/internal/daemon"
)

var daemonCommand = &cli.Command{
	Name:  "daemon",
	Usage: "serve containerd's snapshots API (a proxy snapshotter) on the configured socket",
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		return daemon.Run(c.Context, cfg, daemon.Options{Version: version})
	},
}
