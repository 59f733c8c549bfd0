package main

import (
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/platforms"
	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/layerstore"
	"github.com/superfly/flyio-image-manager/service"
)

var pushLayersCommand = &cli.Command{
	Name:      "push-layers",
	Usage:     "upload an image's layers from containerd's content store to the S3 layer store",
	ArgsUsage: "REF",
	Description: `Reads REF's manifest (linux/amd64 from an index) and config from the
containerd at [containerd] address, and uploads each layer blob to
s3://<bucket>/<layer_prefix>blobs/sha256/<hex> (skipped when there with the
right size) and a pointer to it at <layer_prefix>diffids/sha256/<diff id hex>.
Daemons with the same [s3] layer_prefix then fill these layers themselves
when containerd unpacks them, instead of downloading them from a registry.
The image must be pulled (its layers in the content store) first.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "namespace", Usage: "containerd `NAMESPACE`", DefaultText: "[containerd] namespace"},
		&cli.StringFlag{Name: "platform", Value: "linux/amd64", Usage: "`PLATFORM` to push from a multi-platform image"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return fmt.Errorf("push-layers takes one image reference (e.g. docker.io/library/alpine:3.20), got %d arguments", c.NArg())
		}
		ref := c.Args().First()
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		if cfg.S3.LayerPrefix == "" {
			return fmt.Errorf("[s3] layer_prefix is empty, so the layer store is off: set it (e.g. layer_prefix = \"layers/\") in the config to push layers")
		}
		platform, err := platforms.Parse(c.String("platform"))
		if err != nil {
			return err
		}
		ns := c.String("namespace")
		if ns == "" {
			ns = cfg.Containerd.Namespace
		}
		cd, err := client.New(cfg.Containerd.Address, client.WithDefaultNamespace(ns))
		if err != nil {
			return fmt.Errorf("containerd at %s: %w", cfg.Containerd.Address, err)
		}
		defer cd.Close()
		img, err := cd.ImageService().Get(c.Context, ref)
		if err != nil {
			return fmt.Errorf("image %s in namespace %s: %w", ref, ns, err)
		}
		s3, err := service.NewS3(c.Context, cfg)
		if err != nil {
			return err
		}
		store := layerstore.New(s3, service.S3Config(cfg))
		return store.PushImage(c.Context, cd.ContentStore(), img.Target, platforms.Only(platform), func(p layerstore.Pushed) {
			what := "already there"
			if p.Uploaded {
				what = "uploaded"
			}
			fmt.Fprintf(c.App.Writer, "%s %s (%s, diff id %s): %s as s3://%s/%s\n",
				p.Layer.Digest, p.Layer.MediaType, units.Bytes(p.Layer.Size), p.DiffID, what, cfg.S3.Bucket, p.BlobKey)
		})
	},
}
