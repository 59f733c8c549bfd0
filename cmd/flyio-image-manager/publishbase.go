package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/units"
)

var publishBaseCommand = &cli.Command{
	Name:  "publish-base",
	Usage: "ask the daemon to upload an imported image's base device to S3 as a block image",
	Description: `Reads the committed base of --image-id (its thin device's mapped ranges only)
and uploads it under [s3] block_prefix as content-addressed chunks and a
manifest for the tarball it was imported from (docs/s3.md, "Block images").
Chunks already in the bucket are not uploaded again. process-image on any
host with the same block_prefix then fills a new base from the block image
instead of extracting the tarball.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "image-id", Required: true, Usage: "image `ID`, as list-images and delete-image name it"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		res, err := admin.NewClient(cfg.AdminAddress).PublishBase(c.Context, c.String("image-id"))
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "published image %s (s3://%s/%s, etag %s) as s3://%s/%s\n",
			res.Image.ID, res.Image.Bucket, res.Image.Key, res.Image.ETag, res.Image.Bucket, res.ManifestKey)
		fmt.Fprintf(c.App.Writer, "%d chunks (%s): %d uploaded (%s compressed), %d reused; %d all-zero chunks left out\n",
			res.Chunks, units.Bytes(res.Bytes), res.Uploaded, units.Bytes(res.UploadedBytes), res.Reused, res.ZeroChunks)
		return nil
	},
}
