package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/internal/atomicfile"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
)

var backupCommand = &cli.Command{
	Name:  "backup",
	Usage: "write a consistent copy of the metadata database, daemon running or not",
	Description: `backup copies <root_dir>/metadata.db to --output. When the daemon answers
on admin_address it takes the copy in one read transaction while it keeps
serving; otherwise backup opens the database read-only itself (and refuses
if a daemon that does not answer still holds it).

The copy is written to a new temporary file with a random name beside
FILE (.FILE.tmp-*, mode 0600, created exclusively: nothing already there,
symlink or not, is ever opened), checked by opening it, synced and only
then renamed to FILE, so FILE is never a partial copy. An existing FILE is
kept unless --force is given; a symlink at FILE is refused.

To restore: stop the daemon, put the copy at <root_dir>/metadata.db, start
the daemon. See docs/OPERATIONS.md for what happens to devices created
after the backup.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "write the copy to `FILE`"},
		&cli.BoolFlag{Name: "force", Usage: "replace FILE if it exists"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		out := c.String("output")
		if fi, err := os.Lstat(out); err == nil {
			switch {
			case fi.IsDir():
				return fmt.Errorf("backup: %s is a directory; give a file name", out)
			case fi.Mode()&os.ModeSymlink != 0:
				// The rename would replace the link, not write where it points:
				// say so rather than surprise whoever planted or expects it.
				return fmt.Errorf("backup: %s is a symbolic link; give the path of the file itself", out)
			case !c.Bool("force"):
				return fmt.Errorf("backup: %s already exists; give --force to replace it", out)
			}
		}
		n, from, err := writeBackup(c.Context, cfg, out)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "wrote %s (%s), a copy of %s taken %s\n\n", out, units.Bytes(n), service.MetadataPath(cfg), from)
		fmt.Fprintf(c.App.Writer, "Keep it off this host. To restore: stop the daemon, copy it to %s, start the daemon;\n"+
			"then run 'flyio-image-manager gc --dry-run' to see devices made after the backup.\n", service.MetadataPath(cfg))
		return nil
	},
}

// writeBackup writes the copy to a temporary file beside out and renames
// it to out once it is complete, checked and on disk (see atomicfile: the
// directory may be shared). It says where the copy came from.
func writeBackup(ctx context.Context, cfg config.Config, out string) (n int64, from string, err error) {
	var spares []uint32
	f, err := atomicfile.Create(out)
	if err != nil {
		return 0, "", fmt.Errorf("backup: %w", err)
	}
	defer f.Abort()
	n, from, err = copyMetadata(ctx, cfg, f)
	if err != nil {
		return n, "", err
	}
	// Opening it checks bbolt's meta pages and our schema version, as the
	// daemon will on restore. The spare records go: see ForgetSpares.
	if err := f.Check(); err != nil {
		return n, "", fmt.Errorf("backup: %w", err)
	}
	spares, err = forgetSpares(f.Name())
	if err != nil {
		return n, "", err
	}
	if len(spares) > 0 {
		from += fmt.Sprintf("; left out %d spare device record(s) (thin ids %v): a spare may be a container's device by the time the copy is restored", len(spares), spares)
	}
	if fi, err := f.Stat(); err == nil {
		n = fi.Size()
	}
	// bbolt wrote through its own descriptor of the same inode: syncing
	// ours in Commit flushes those writes too.
	if err := f.Commit(); err != nil {
		return n, "", fmt.Errorf("backup: %w", err)
	}
	return n, from, nil
}

// copyMetadata writes the database to w: from the daemon when it answers,
// otherwise from the file opened read-only.
func copyMetadata(ctx context.Context, cfg config.Config, w io.Writer) (int64, string, error) {
	n, err := admin.NewClient(cfg.AdminAddress).Backup(ctx, w)
	if err == nil {
		return n, "from the running daemon", nil
	}
	if !errors.Is(err, admin.ErrDaemonNotRunning) {
		return n, "", fmt.Errorf("backup: %w", err)
	}
	svc, err := service.Open(ctx, cfg, service.Inspect)
	if errors.Is(err, metadata.ErrLocked) {
		return 0, "", fmt.Errorf("backup: the daemon's admin socket %s does not answer, but a daemon holds the metadata "+
			"(is it still starting?); try again: %w", cfg.AdminAddress, err)
	}
	if err != nil {
		return 0, "", fmt.Errorf("backup: %w", err)
	}
	defer svc.Close()
	n, err = svc.Store.Backup(w)
	if err != nil {
		return n, "", fmt.Errorf("backup: %w", err)
	}
	return n, "with the daemon stopped", nil
}

// forgetSpares opens the copy at path, drops its spare device records
// and closes it again: opening checks bbolt's meta pages and our schema
// version, as the daemon will on restore.
func forgetSpares(path string) ([]uint32, error) {
	s, err := metadata.Open(path, metadata.Options{})
	if err != nil {
		return nil, fmt.Errorf("backup: the copy in %s does not open: %w", path, err)
	}
	var ids []uint32
	err = s.Update(func(tx *metadata.Tx) (err error) { ids, err = tx.ForgetSpares(); return err })
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("backup: leaving the spare devices out of %s: %w", path, err)
	}
	return ids, nil
}
