package main

import (
	tea "github.com/charmbracelet/bubbletea"
	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/cmd/flyio-image-manager/dashboard"
	"github.com/superfly/flyio-image-manager/service"
)

var dashboardCommand = &cli.Command{
	Name:  "dashboard",
	Usage: "terminal dashboard: pool, runs and activity (1), S3 images to import (2)",
	Description: `Monitor view (1): pool data/metadata gauges and mode, runs in progress
with their progress, and an activity log. Images view (2): the image tarballs
under [s3] prefix and whether each is imported; Enter imports the selected one
(as process-image does, with the image id derived from the key).
Keys: j/k or arrows move, g/G first/last, Tab cycles panels, r refreshes,
q or Ctrl+C quits. Status refreshes every second, the S3 listing every 30s.`,
	Flags: []cli.Flag{
		prefixFlag,
		&cli.StringFlag{Name: "log-file", Usage: "append what would be logged while the dashboard runs to `FILE`", DefaultText: "discarded"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		prefix := s3Prefix(c, cfg)
		src := dashboard.NewDaemonSource(admin.NewClient(cfg.AdminAddress), service.S3Config(cfg), prefix)
		m := dashboard.New(src, dashboard.Options{Prefix: prefix})
		// Nothing but the TUI may write to its terminal: a log line (the
		// AWS SDK's, ours) would be drawn over it.
		restore, err := quietTerminal(c.String("log-file"))
		if err != nil {
			return err
		}
		defer restore()
		_, err = tea.NewProgram(m, tea.WithAltScreen(), tea.WithContext(c.Context)).Run()
		return err
	},
}
