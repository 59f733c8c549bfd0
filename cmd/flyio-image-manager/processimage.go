package main

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

var processImageCommand = &cli.Command{
	Name:  "process-image",
	Usage: "ask the daemon to turn an S3 image tarball into a base device and a containerd image",
	Description: `The daemon streams s3://<bucket>/<KEY> through the validated extractor onto a
new thin device, commits it as a base snapshot and registers an image in
containerd, so 'ctr run --snapshotter flyio REF id cmd' starts on it.
The same bucket/key/ETag is processed once; concurrent requests join one run.
Defaults: --image-id is the key's file name without its archive suffix
(images/Alpine_3.19.tar.gz -> alpine-3.19); --ref is
images.flyio.local/<image-id>:latest.
With [s3] block_prefix set and a block image of the key published
(publish-base) for its current ETag, the base is filled from the block
image instead: a fresh device written at disk speed, no extraction.
With --lazy (or [lazy] default = true) the base is usable at once: its
device reads what it has not got from an origin the daemon serves from the
block image, fetching chunks as they are read and the rest in the
background; 'status' shows the fetch.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "s3-key", Required: true, Usage: "object `KEY`, e.g. images/alpine.tar"},
		&cli.StringFlag{Name: "image-id", Usage: "image id", DefaultText: "derived from the key"},
		&cli.StringFlag{Name: "ref", Usage: "containerd image name", DefaultText: "images.flyio.local/<image-id>:latest"},
		&cli.BoolFlag{Name: "no-wait", Usage: "return once the run is accepted"},
		&cli.BoolFlag{Name: "from-block", Usage: "fill from the key's block image ([s3] block_prefix); fail if there is none"},
		&cli.BoolFlag{Name: "lazy", Usage: "start from the key's block image at once, fetching it in the background (--lazy=false: fill it first)", DefaultText: "[lazy] default"},
	},
	Action: func(c *cli.Context) error {
		// A bad key is refused here, before the config or the daemon.
		if err := s3fetch.ValidateKey(c.String("s3-key")); err != nil {
			return err
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		cl := admin.NewClient(cfg.AdminAddress)
		req := admin.ProcessImageRequest{Key: c.String("s3-key"), ImageID: c.String("image-id"), Ref: c.String("ref"), FromBlock: c.Bool("from-block")}
		if c.IsSet("lazy") {
			lazy := c.Bool("lazy")
			req.Lazy = &lazy
		}
		run, err := cl.ProcessImage(c.Context, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "run %s: s3://%s/%s (etag %s) -> %s\n", run.ID, run.Bucket, run.Key, run.ETag, run.Ref)
		if run.Lazy {
			fmt.Fprintf(c.App.Writer, "starting from block image s3://%s/%s at once (lazy)\n", run.Bucket, run.Block)
		} else if run.Block != "" {
			fmt.Fprintf(c.App.Writer, "filling from block image s3://%s/%s\n", run.Bucket, run.Block)
		}
		if c.Bool("no-wait") {
			return nil
		}
		run, err = follow(c, cl, run)
		if err != nil {
			return err
		}
		if err := admin.RunError(run); err != nil {
			return err
		}
		if run.Origin != "" {
			fmt.Fprintf(c.App.Writer, "done: image %s (id %s), base snapshot %s on origin %s: usable now, fetched in the background (status shows it)\n",
				run.Ref, run.ImageID, run.ChainID, run.Origin)
			return nil
		}
		fmt.Fprintf(c.App.Writer, "done: image %s (id %s), base snapshot %s, %d entries, %s\n",
			run.Ref, run.ImageID, run.ChainID, run.Entries, units.Bytes(run.Bytes))
		return nil
	},
}

// follow polls the run until it finishes, drawing a progress bar of the
// compressed bytes read on a terminal and a line per state otherwise.
func follow(c *cli.Context, cl *admin.Client, run admin.Run) (admin.Run, error) {
	tty := term.IsTerminal(int(os.Stderr.Fd()))
	var bar *progressbar.ProgressBar
	if tty {
		bar = progressbar.NewOptions64(run.Size, progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true), progressbar.OptionSetDescription(string(run.State)),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	last := run.State
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !run.State.Finished() {
		select {
		case <-c.Context.Done():
			return run, c.Context.Err()
		case <-tick.C:
		}
		var err error
		if run, err = cl.Run(c.Context, run.ID); err != nil {
			return run, err
		}
		if bar != nil {
			bar.Describe(fmt.Sprintf("%-11s %d entries", run.State, run.Entries))
			bar.Set64(run.CompressedBytes)
		} else if run.State != last {
			fmt.Fprintf(c.App.ErrWriter, "%s (%s read, %d entries)\n", run.State, units.Bytes(run.CompressedBytes), run.Entries)
		}
		last = run.State
	}
	if bar != nil {
		bar.Finish()
	}
	return run, nil
}
