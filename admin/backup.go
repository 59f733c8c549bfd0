package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// BackupBackend gives out consistent copies of the metadata database.
type BackupBackend interface {
	// Backup returns a copy of the metadata database, taken in one read
	// transaction while the daemon keeps working, and its size. The
	// caller closes it.
	Backup(ctx context.Context) (io.ReadCloser, int64, error)
}

func backupRoutes(mux *http.ServeMux, b BackupBackend) {
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		rc, size, err := b.Backup(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		defer rc.Close()
		// Content-Length lets the client tell a complete copy from one cut
		// short; once the body has started there is no other way to fail.
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		io.Copy(w, rc)
	})
}

// Backup streams a copy of the daemon's metadata database to w and returns
// its size. A copy shorter than the daemon announced is an error, so a
// nil error means w holds the whole database.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("receiving the backup from %s after %d bytes: %w", c.path, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("backup from %s cut short: %d of %d bytes", c.path, n, resp.ContentLength)
	}
	return n, nil
}
