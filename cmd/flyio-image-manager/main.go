// Command flyio-image-manager is the daemon (a containerd proxy
// snapshotter on dm-thin) and the operator commands that go with it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	app := newApp()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := app.RunContext(ctx, os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

// newApp builds the command tree. It is a function, not inline in main, so
// that docs_test.go can check every command and flag the docs name against
// the real app.
func newApp() *cli.App {
	return &cli.App{
		Name:  "flyio-image-manager",
		Usage: "containerd snapshotter on dm-thin, filled from S3",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Value: config.DefaultPath, Usage: "configuration `FILE` (a missing default file means all defaults)"},
		},
		Commands: []*cli.Command{
			versionCommand,
			setupPoolCommand,
			poolCommand,
			daemonCommand,
			statusCommand,
			cancelCommand,
			queueStatusCommand,
			extractCommand,
			validateCommand,
			processImageCommand,
			listImagesCommand,
			pushLayersCommand,
			gcCommand,
			deleteImageCommand,
			imagesCommand,
			snapshotsCommand,
			diagCommand,
			backupCommand,
			dashboardCommand,
		},
	}
}

// loadConfig reads --config, which is only required to exist when given
// explicitly.
func loadConfig(c *cli.Context) (config.Config, error) {
	path := c.String("config")
	return config.Load(path, c.IsSet("config"))
}
