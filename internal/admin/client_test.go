package admin

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestNotRunningSaysWhatToDo: no daemon on the socket names the socket and
// systemd, and does not end in errdefs' bare "unavailable".
func TestNotRunningSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // a socket file nobody listens on: connection refused
	for _, path := range []string{filepath.Join(dir, "absent.sock"), stale} {
		_, err := NewClient(path).Images(context.Background())
		if !errors.Is(err, ErrDaemonNotRunning) || !errdefs.IsUnavailable(err) {
			t.Fatalf("%s: %v, want ErrDaemonNotRunning and errdefs.ErrUnavailable", path, err)
		}
		msg := err.Error()
		for _, want := range []string{path, "systemctl status flyio-image-manager", "systemctl start flyio-image-manager", "flyio-image-manager daemon"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%q lacks %q", msg, want)
			}
		}
		if strings.HasSuffix(msg, ": unavailable") {
			t.Errorf("%q ends in a stray \": unavailable\"", msg)
		}
	}
}
