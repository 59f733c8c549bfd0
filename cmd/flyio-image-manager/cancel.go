package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
)

var cancelCommand = &cli.Command{
	Name:  "cancel",
	Usage: "stop a queued or running process-image run; its half-filled snapshot is removed",
	Description: `cancel returns once the run has stopped and cleaned up; the run is then in
state cancelled and is not resumed by a restart. process-image of the same
key afterwards starts a new run. A run that is already committing is not
cancelled (stopping it between the base commit and the image registration
would leave a base without its image): wait for it and use delete-image.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "run-id", Required: true, Usage: "process-image run `ID` (from process-image or status)"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		run, err := admin.NewClient(cfg.AdminAddress).Cancel(c.Context, c.String("run-id"))
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "run %s: %s (s3://%s/%s): %s\n", run.ID, run.State, run.Bucket, run.Key, run.Error)
		return nil
	},
}
