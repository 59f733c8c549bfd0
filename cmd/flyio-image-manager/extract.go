package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/service"
)

var extractFlags = []cli.Flag{
	&cli.StringFlag{Name: "max-file-size", Usage: "largest entry, a `SIZE` such as 1GiB or 1PiB", DefaultText: "[extract] max_file_size"},
	&cli.StringFlag{Name: "max-total-size", Usage: "largest archive, uncompressed, a `SIZE` such as 64GiB", DefaultText: "[extract] max_total_size"},
	&cli.IntFlag{Name: "max-entries", Usage: "most entries, a positive `NUMBER`", DefaultText: "[extract] max_entries"},
	&cli.BoolFlag{Name: "strict-symlinks", Usage: "also reject symlinks whose target climbs out of the root"},
	&cli.BoolFlag{Name: "allow-devices", Usage: "create device nodes instead of skipping them (FIFOs are always created)"},
	&cli.BoolFlag{Name: "layer", Usage: "apply as an OCI layer (whiteouts) instead of a flattened rootfs"},
	&cli.StringFlag{Name: "diff-id", Usage: "fail unless the uncompressed stream hashes to this sha256"},
}

var extractCommand = &cli.Command{
	Name:  "extract",
	Usage: "extract an image tarball (tar, tar.gz, tar.zst) into a directory, with every safety check",
	Description: `Applies the same checks as process-image (no path traversal, no escaping
hardlinks, size and entry limits from [extract] or the flags) while
writing into --dest, which must exist. FILE may be - for standard input.
Needs no daemon and no device-mapper.`,
	ArgsUsage: "FILE|-",
	Flags:     append([]cli.Flag{&cli.StringFlag{Name: "dest", Required: true, Usage: "target `DIR`, new or empty (a --layer also goes onto a full one); filled only once the whole archive passed"}}, extractFlags...),
	Action: func(c *cli.Context) error {
		return runExtract(c, func(r io.Reader, opts extract.Options) (extract.Result, error) {
			return extractDest(c.Context, r, c.String("dest"), opts)
		})
	},
}

var validateCommand = &cli.Command{
	Name:  "validate",
	Usage: "check an image tarball as extract would, writing nothing",
	Description: `Reads the whole archive (tar, tar.gz or tar.zst; FILE or - for standard
input) through every check extract makes and prints its entries, size,
diff_id and digest; the first problem is an error naming the entry.
Sizes take units: --max-file-size 1PiB, --max-total-size 64GiB.`,
	ArgsUsage: "FILE|-",
	Flags:     extractFlags,
	Action: func(c *cli.Context) error {
		return runExtract(c, func(r io.Reader, opts extract.Options) (extract.Result, error) {
			return extract.Validate(c.Context, r, opts)
		})
	},
}

func runExtract(c *cli.Context, do func(io.Reader, extract.Options) (extract.Result, error)) error {
	if c.NArg() != 1 {
		return fmt.Errorf("%s takes one archive (a FILE, or - for standard input), got %d arguments", c.Command.Name, c.NArg())
	}
	opts, err := extractOptions(c)
	if err != nil {
		return err
	}
	in := io.Reader(os.Stdin)
	if name := c.Args().First(); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	res, err := do(in, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "ok: %d entries, %s uncompressed (%s), diff_id %s, digest %s\n",
		res.Entries, units.Bytes(res.Bytes), res.Compression, res.DiffID, res.Digest)
	return nil
}

// extractOptions starts from the [extract] section of the config and lets
// flags override it.
func extractOptions(c *cli.Context) (extract.Options, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return extract.Options{}, err
	}
	opts := service.ExtractOptions(cfg)
	opts.StrictSymlinks = opts.StrictSymlinks || c.Bool("strict-symlinks")
	opts.AllowDevices = opts.AllowDevices || c.Bool("allow-devices")
	opts.ExpectedDiffID = c.String("diff-id")
	opts.Warn = func(s string) { fmt.Fprintln(c.App.ErrWriter, "warning:", s) }
	if c.Bool("layer") {
		opts.Mode = extract.Layer
	}
	for flag, dst := range map[string]*int64{"max-file-size": &opts.MaxFileSize, "max-total-size": &opts.MaxTotalSize} {
		if v := c.String(flag); v != "" {
			n, err := units.ParseSize(v)
			if err != nil {
				return opts, fmt.Errorf("--%s: %w", flag, err)
			}
			if n == 0 {
				return opts, fmt.Errorf("--%s %s: want a size above 0", flag, v)
			}
			*dst = n
		}
	}
	if c.IsSet("max-entries") {
		if n := c.Int("max-entries"); n <= 0 {
			return opts, fmt.Errorf("--max-entries %d: want a positive number of entries", n)
		}
		opts.MaxEntries = c.Int("max-entries")
	}
	return opts, nil
}
