package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/internal/admin"
	"github.com/superfly/flyio-image-manager/internal/config"
	"github.com/superfly/flyio-image-manager/internal/daemon"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/metadata"
)

var backupCommand = &cli.Command{
	Name:  "backup",
	Usage: "write a consistent copy of the metadata database, daemon running or not",
	Description: `backup copies <root_dir>/metadata.db to --output. When the daemon answers
on admin_address it takes the copy in one read transaction while it keeps
serving; otherwise backup opens the database read-only itself (and refuses
if a daemon that does not answer still holds it).

The copy is written to FILE.tmp, checked by opening it, synced and only
then renamed to FILE, so FILE is never a partial copy. An existing FILE is
kept unless --force is given.

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
		if fi, err := os.Stat(out); err == nil {
			if fi.IsDir() {
				return fmt.Errorf("backup: %s is a directory; give a file name", out)
			}
			if !c.Bool("force") {
				return fmt.Errorf("backup: %s already exists; give --force to replace it", out)
			}
		}
		n, from, err := writeBackup(c.Context, cfg, out)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "wrote %s (%s), a copy of %s taken %s\n\n", out, units.Bytes(n), daemon.MetadataPath(cfg), from)
		fmt.Fprintf(c.App.Writer, "Keep it off this host. To restore: stop the daemon, copy it to %s, start the daemon;\n"+
			"then run 'flyio-image-manager gc --dry-run' to see devices made after the backup.\n", daemon.MetadataPath(cfg))
		return nil
	},
}

// writeBackup writes the copy to out.tmp and renames it to out once it is
// complete, checked and on disk. It says where the copy came from.
func writeBackup(ctx context.Context, cfg config.Config, out string) (n int64, from string, err error) {
	var spares []uint32
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, "", fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, from, err = copyMetadata(ctx, cfg, f)
	if err != nil {
		return n, "", err
	}
	if err := f.Close(); err != nil {
		return n, "", fmt.Errorf("backup: close %s: %w", tmp, err)
	}
	// Opening it checks bbolt's meta pages and our schema version, as the
	// daemon will on restore. The spare records go: see ForgetSpares.
	spares, err = forgetSpares(tmp)
	if err != nil {
		return n, "", err
	}
	if len(spares) > 0 {
		from += fmt.Sprintf("; left out %d spare device record(s) (thin ids %v): a spare may be a container's device by the time the copy is restored", len(spares), spares)
	}
	if err := syncFile(tmp); err != nil {
		return n, "", err
	}
	if fi, err := os.Stat(tmp); err == nil {
		n = fi.Size()
	}
	if err := os.Rename(tmp, out); err != nil {
		return n, "", fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
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
	path := daemon.MetadataPath(cfg)
	store, err := metadata.Open(path, metadata.Options{ReadOnly: true})
	if errors.Is(err, metadata.ErrLocked) {
		return 0, "", fmt.Errorf("backup: the daemon's admin socket %s does not answer, but a daemon holds the metadata "+
			"(is it still starting?); try again: %w", cfg.AdminAddress, err)
	}
	if err != nil {
		return 0, "", fmt.Errorf("backup: %w", err)
	}
	defer store.Close()
	n, err = store.Backup(w)
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

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", path, err)
	}
	return nil
}
