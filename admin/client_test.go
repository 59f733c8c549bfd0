package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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

// TestRemoteErrorWithoutKindText: a daemon error keeps its errdefs kind
// but loses the kind's text at its end (": failed precondition").
func TestRemoteErrorWithoutKindText(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("delete-image demo: base still has 1 dependent snapshot(s): %w", errdefs.ErrFailedPrecondition))
	})}
	go srv.Serve(l)
	defer srv.Close()
	_, err = NewClient(sock).DeleteImage(context.Background(), "demo")
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("%v: kind lost", err)
	}
	if got, want := err.Error(), "delete-image demo: base still has 1 dependent snapshot(s)"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}
