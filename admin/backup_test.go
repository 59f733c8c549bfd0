package admin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// fakeBackup hands out data, announcing size for it.
type fakeBackup struct {
	data string
	size int64
	err  error
}

func (f fakeBackup) Backup(context.Context) (io.ReadCloser, int64, error) {
	return io.NopCloser(strings.NewReader(f.data)), f.size, f.err
}

func serveBackup(t *testing.T, b BackupBackend) *Client {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	backupRoutes(mux, b)
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock)
}

func TestBackupRoute(t *testing.T) {
	ctx := context.Background()
	var buf bytes.Buffer
	n, err := serveBackup(t, fakeBackup{data: "bbolt bytes", size: 11}).Backup(ctx, &buf)
	if err != nil || n != 11 || buf.String() != "bbolt bytes" {
		t.Errorf("Backup: %d %q %v", n, buf.String(), err)
	}

	// The daemon announcing more than it sends is a failed backup.
	buf.Reset()
	_, err = serveBackup(t, fakeBackup{data: "short", size: 100}).Backup(ctx, &buf)
	if err == nil {
		t.Errorf("a copy cut short was accepted (%d bytes)", buf.Len())
	}

	_, err = serveBackup(t, fakeBackup{err: fmt.Errorf("backup: disk full: %w", errdefs.ErrUnavailable)}).Backup(ctx, &buf)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("daemon error: %v", err)
	}
}
