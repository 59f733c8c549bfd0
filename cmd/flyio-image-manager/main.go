// Command flyio-image-manager is the daemon (a containerd proxy
// snapshotter on dm-thin) and the operator commands that go with it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/config"
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
	app := &cli.App{
		Name:  "flyio-image-manager",
		Usage: "containerd snapshotter on dm-thin, filled from S3",
		Flags: globalFlags(),
		// Reached only when the first argument names no command: cli's
		// own fallback is its help action, which answers "No help topic"
		// with exit status 3.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unknown command %q; 'flyio-image-manager help' lists the commands", c.Args().First())
			}
			return cli.ShowAppHelp(c)
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
			publishBaseCommand,
			gcCommand,
			deleteImageCommand,
			imagesCommand,
			snapshotsCommand,
			diagCommand,
			backupCommand,
			dashboardCommand,
		},
	}
	inheritOnce.Do(func() { inheritGlobalFlags(app.Commands) })
	return app
}

// inheritOnce: the command variables are shared by every newApp call
// (tests build many apps, possibly at once).
var inheritOnce sync.Once

// globalFlags are the app's flags. Each command gets its own copy too
// (inheritGlobalFlags), so `daemon --config FILE` works as well as
// `--config FILE daemon`.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Value: config.DefaultPath, Usage: "configuration `FILE`; a missing default file means all defaults"},
	}
}

// inheritGlobalFlags adds the global flags to every command (and
// subcommand) that does not define a flag of the same name.
func inheritGlobalFlags(cmds []*cli.Command) {
	for _, cmd := range cmds {
		for _, g := range globalFlags() {
			if !hasFlag(cmd.Flags, g.Names()[0]) {
				cmd.Flags = append(cmd.Flags, g)
			}
		}
		inheritGlobalFlags(cmd.Subcommands)
	}
}

func hasFlag(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// loadConfig reads --config, which is only required to exist when given
// explicitly. The innermost place it was given wins: after the command
// name, else before it.
func loadConfig(c *cli.Context) (config.Config, error) {
	for _, l := range c.Lineage() {
		if l.IsSet("config") {
			return config.Load(l.String("config"), true)
		}
	}
	return config.Load(config.DefaultPath, false)
}
