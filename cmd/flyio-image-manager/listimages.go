package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/service"
)

var listImagesCommand = &cli.Command{
	Name:  "list-images",
	Usage: "list the image tarballs in S3 under [s3] prefix, and which the daemon has processed",
	Description: `Lists the objects under --prefix ([s3] prefix) in [s3] bucket with the
AWS SDK's credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile
or an instance role) of this shell, not the daemon's. When the daemon
answers, each line also says whether that object version was imported.
Use a key it prints with 'process-image --s3-key'.`,
	Flags: []cli.Flag{
		prefixFlag,
		jsonFlag,
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		prefix := s3Prefix(c, cfg)
		cl, err := service.NewS3(c.Context, cfg)
		if err != nil {
			return err
		}
		objs, err := cl.List(c.Context, prefix)
		if err != nil {
			return err
		}
		// Which object versions were processed, when the daemon answers.
		latest := map[string]admin.Run{}
		if runs, err := admin.NewClient(cfg.AdminAddress).Runs(c.Context); err == nil {
			for _, r := range runs {
				latest[r.Key+"\x00"+r.ETag] = r
			}
		}
		rows := make([]s3Image, 0, len(objs))
		for _, o := range objs {
			row := s3Image{Key: o.Key, Size: o.Size, Modified: o.LastModified, ETag: o.ETag, State: "-"}
			if r, ok := latest[o.Key+"\x00"+o.ETag]; ok {
				row.State, row.RunID, row.Ref = string(r.State), r.ID, r.Ref
			}
			rows = append(rows, row)
		}
		if c.Bool("json") {
			return printJSON(c.App.Writer, rows)
		}
		w := newTable(c.App.Writer)
		fmt.Fprintln(w, "KEY\tSIZE\tMODIFIED\tSTATE\tREF")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Key, units.Bytes(r.Size), r.Modified.Format("2006-01-02 15:04"), r.State, r.Ref)
		}
		return w.Flush()
	},
}

// prefixFlag lets list-images and the dashboard look under another S3
// prefix than the configured one.
var prefixFlag = &cli.StringFlag{Name: "prefix", Usage: "list under this `PREFIX` instead of [s3] prefix"}

// s3Prefix is --prefix when given, else [s3] prefix.
func s3Prefix(c *cli.Context, cfg config.Config) string {
	if c.IsSet("prefix") {
		return c.String("prefix")
	}
	return cfg.S3.Prefix
}

// s3Image is one row of list-images: an object under the prefix and the
// latest process-image run of that exact version, if any.
type s3Image struct {
	Key      string    `json:"key"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
	ETag     string    `json:"etag"`
	State    string    `json:"state"`
	RunID    string    `json:"run_id,omitempty"`
	Ref      string    `json:"ref,omitempty"`
}
