package main

import (
	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/daemon"
)

var daemonCommand = &cli.Command{
	Name:  "daemon",
	Usage: "serve containerd's snapshots API (a proxy snapshotter) on the configured socket",
	Description: `Runs in the foreground, normally under systemd
(systemctl start flyio-image-manager; journalctl -u flyio-image-manager).
At start it creates or re-creates the thin-pool as setup-pool does, opens
the metadata database under root_dir (one daemon per root_dir), then
serves containerd's snapshots gRPC API on 'address' (point containerd's
[proxy_plugins.flyio] at it, docs/containerd.md) and the operator
commands on 'admin_address'. It needs root and device-mapper with
dm_thin_pool (modprobe dm_thin_pool). S3 is used only for process-image
and the layer store: the daemon runs without [s3] bucket. SIGINT or
SIGTERM stop it; thin devices stay active, so running containers are not
disturbed by a restart.`,
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		return daemon.Run(c.Context, cfg, daemon.Options{Version: version})
	},
}
