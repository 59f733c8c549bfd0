package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Backup copies the metadata database into an unlinked temporary file
// next to it and returns that file to stream. Copying to local disk first
// keeps the read transaction short: while it is open, a write that needs
// to grow the database waits, and a slow admin client must not hold up
// Prepare and Commit.
func (b *backend) Backup(ctx context.Context) (io.ReadCloser, int64, error) {
	dir := filepath.Dir(b.store.Path())
	f, err := os.CreateTemp(dir, ".metadata-backup-*")
	if err != nil {
		return nil, 0, fmt.Errorf("backup: temporary copy in %s: %w", dir, err)
	}
	// Unlinked at once, so a crash or a dropped client leaves nothing behind.
	os.Remove(f.Name())
	n, err := b.store.Backup(f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("backup: copying %s to %s: %w", b.store.Path(), dir, err)
	}
	return f, n, nil
}
