package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/units"
)

var imagesCommand = &cli.Command{
	Name:  "images",
	Usage: "list the images process-image imported: S3 source, digest, sizes, base device and what depends on it",
	Description: `SIZE is the uncompressed tar stream, COMPRESSED what was read from S3.
DEVICE is the thin id of the base snapshot and USAGE the data it maps.
DEPENDANTS counts the snapshots (containers, views) built on the base;
--json lists them, and delete-image refuses while there are any.`,
	Flags: []cli.Flag{jsonFlag},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		imgs, err := admin.NewClient(cfg.AdminAddress).Images(c.Context)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(c.App.Writer, imgs)
		}
		return writeImages(c.App.Writer, imgs, time.Now())
	},
}

// writeImages prints the images as an aligned table.
func writeImages(w io.Writer, imgs []admin.ImageInfo, now time.Time) error {
	if len(imgs) == 0 {
		_, err := fmt.Fprintln(w, "no imported images (process-image imports them)")
		return err
	}
	t := newTable(w)
	fmt.Fprintln(t, "ID\tREF\tS3 KEY\tETAG\tDIGEST\tSIZE\tCOMPRESSED\tDEVICE\tUSAGE\tDEPENDANTS\tCREATED")
	for _, i := range imgs {
		dev := "-"
		if i.DeviceName != "" {
			dev = fmt.Sprint(i.DeviceID)
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			i.ID, i.Ref, i.Key, shortETag(i.ETag), shortDigest(i.Digest), sizeOrDash(i.Size), sizeOrDash(i.CompressedSize),
			dev, mappedOrDash(i.Usage), len(i.Dependants), units.Ago(i.Created, now))
	}
	return t.Flush()
}

// shortDigest keeps the algorithm and 12 hex digits, as docker and ctr
// show ids.
func shortDigest(d string) string {
	if d == "" {
		return "-"
	}
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return alg + ":" + hex[:12]
}

func shortETag(e string) string {
	e = strings.Trim(e, `"`)
	switch {
	case e == "":
		return "-"
	case len(e) > 16:
		return e[:16] + "..."
	}
	return e
}

func sizeOrDash(n int64) string {
	if n <= 0 {
		return "-"
	}
	return units.Bytes(n)
}

// mappedOrDash prints mapped bytes; -1 is unknown.
func mappedOrDash(n int64) string {
	if n < 0 {
		return "-"
	}
	return units.Bytes(n)
}
