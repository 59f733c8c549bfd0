package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/importer"
)

var queueStatusCommand = &cli.Command{
	Name:  "queue-status",
	Usage: "print the downloads and unpacks queues and the runs in them",
	Description: `downloads is the S3 download queue ([s3] download_queue_size, shared with
remote layer fills, which count but are not listed); unpacks admits
[extract] unpack_queue_size process-image runs to download and extract at
once, first come first served. POS is "active" for a holder, else the
place in line (1 goes next).`,
	Flags: []cli.Flag{
		jsonFlag,
		&cli.StringFlag{Name: "queue", Usage: "only `QUEUE` (downloads or unpacks)"},
	},
	Action: func(c *cli.Context) error {
		name := c.String("queue")
		if name != "" && name != importer.QueueDownloads && name != importer.QueueUnpacks {
			return fmt.Errorf("unknown queue %q (--queue): want %s or %s", name, importer.QueueDownloads, importer.QueueUnpacks)
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		qs, err := admin.NewClient(cfg.AdminAddress).Queues(c.Context)
		if err != nil {
			return err
		}
		if name != "" {
			var only []admin.QueueInfo
			for _, q := range qs {
				if q.Name == name {
					only = append(only, q)
				}
			}
			qs = only
		}
		if c.Bool("json") {
			return printJSON(c.App.Writer, qs)
		}
		printQueues(c.App.Writer, qs)
		return nil
	},
}

// printQueues prints a summary row per queue, then the runs in them.
func printQueues(w io.Writer, qs []admin.QueueInfo) {
	t := newTable(w)
	fmt.Fprintln(t, "QUEUE\tCAPACITY\tACTIVE\tWAITING")
	for _, q := range qs {
		fmt.Fprintf(t, "%s\t%d\t%d\t%d\n", q.Name, q.Capacity, q.Active, q.Waiting)
	}
	t.Flush()
	var any bool
	for _, q := range qs {
		any = any || len(q.Runs) > 0
	}
	if !any {
		return
	}
	fmt.Fprintln(w)
	t = newTable(w)
	fmt.Fprintln(t, "QUEUE\tPOS\tRUN\tSTATE\tS3 KEY")
	for _, q := range qs {
		for _, r := range q.Runs {
			pos := "active"
			if r.Position > 0 {
				pos = strconv.Itoa(r.Position)
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", q.Name, pos, r.ID, r.State, r.Key)
		}
	}
	t.Flush()
}
