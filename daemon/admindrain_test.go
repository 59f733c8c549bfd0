package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// adminTestServer serves h on a unix socket and returns a client for it.
func adminTestServer(t *testing.T, h http.Handler) (*adminServer, *http.Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	a := newAdminServer(h)
	go a.Serve(l)
	return a, &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
}

// TestAdminDrainLetsCallsFinish: a call running when the daemon stops
// finishes and its client gets the answer; the drain returns after it.
func TestAdminDrainLetsCallsFinish(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	a, cl := adminTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		finished.Store(true)
		io.WriteString(w, "done")
	}))
	got := make(chan string, 1)
	go func() {
		resp, err := cl.Get("http://admin/v1/gc")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	drained := make(chan struct{})
	go func() { a.drain(context.Background(), time.Minute, time.Minute); close(drained) }()
	select {
	case <-drained:
		t.Fatal("drain returned while a call was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-drained
	if !finished.Load() {
		t.Fatal("drain returned before the handler finished")
	}
	if g := <-got; g != "done" {
		t.Fatalf("client got %q, want the handler's answer", g)
	}
}

// TestAdminDrainCutsCallsAndWaits: a call still running at the drain
// deadline has its context cancelled, and the drain returns only once
// its handler has returned, so nothing runs after the database closes.
func TestAdminDrainCutsCallsAndWaits(t *testing.T) {
	entered := make(chan struct{})
	var finished, cancelled atomic.Bool
	a, cl := adminTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		cancelled.Store(true)
		time.Sleep(300 * time.Millisecond) // finishing its step
		finished.Store(true)
	}))
	go cl.Get("http://admin/v1/gc")
	<-entered
	a.drain(context.Background(), 100*time.Millisecond, time.Minute)
	if !cancelled.Load() || !finished.Load() {
		t.Fatalf("drain returned with the handler cancelled=%v finished=%v, want both", cancelled.Load(), finished.Load())
	}
}
