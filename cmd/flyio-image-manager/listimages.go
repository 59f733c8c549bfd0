package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/admin"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

var listImagesCommand = &cli.Command{
	Name:  "list-images",
	Usage: "list the image tarballs in S3 under [s3] prefix, and which the daemon has processed",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "prefix", Usage: "list under this `PREFIX` instead of [s3] prefix"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		prefix := cfg.S3.Prefix
		if c.IsSet("prefix") {
			prefix = c.String("prefix")
		}
		cl, err := s3fetch.New(c.Context, cfg.S3)
		if err != nil {
			return err
		}
		objs, err := cl.List(c.Context, prefix)
		if err != nil {
			return err
		}
		// Which object versions were processed, when the daemon answers.
		latest := map[string]metadata.Run{}
		if runs, err := admin.NewClient(cfg.AdminAddress).Runs(c.Context); err == nil {
			for _, r := range runs {
				latest[r.Key+"\x00"+r.ETag] = r
			}
		}
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KEY\tSIZE\tMODIFIED\tSTATE\tREF")
		for _, o := range objs {
			state, ref := "-", ""
			if r, ok := latest[o.Key+"\x00"+o.ETag]; ok {
				state, ref = string(r.State), r.Ref
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", o.Key, extract.FormatSize(o.Size), o.LastModified.Format("2006-01-02 15:04"), state, ref)
		}
		return w.Flush()
	},
}
