package daemon

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/containerd/log"
)

// adminServer is the admin API's HTTP server, built so that a stop can
// drain it as drainGRPC drains the snapshots API: http.Server.Close
// alone returns while handlers (a gc, a delete-image) still run, and
// they would then work on a pool and a database being closed.
type adminServer struct {
	srv *http.Server
	// cancel cancels every request's context: the cut after the drain
	// deadline.
	cancel   context.CancelFunc
	handlers inflight
}

func newAdminServer(h http.Handler) *adminServer {
	base, cancel := context.WithCancel(context.Background())
	a := &adminServer{cancel: cancel}
	a.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.handlers.add()
			defer a.handlers.done()
			h.ServeHTTP(w, r)
		}),
		BaseContext:       func(net.Listener) context.Context { return base },
		ReadHeaderTimeout: 10 * time.Second,
	}
	return a
}

func (a *adminServer) Serve(l net.Listener) error { return a.srv.Serve(l) }

// drain stops the server: no new request is accepted, running ones may
// finish for up to drain; then their contexts are cancelled, their
// connections closed, and drain waits up to cancel more for their
// handlers to return (a handler in a device-mapper step finishes the
// step). One that does not return even then is abandoned, logged.
func (a *adminServer) drain(ctx context.Context, drain, cancel time.Duration) {
	sctx, stop := context.WithTimeout(context.WithoutCancel(ctx), drain)
	err := a.srv.Shutdown(sctx)
	stop()
	if err == nil {
		a.cancel()
		return
	}
	log.G(ctx).Warnf("admin API calls still running after %s; cancelling them", drain)
	a.cancel()
	a.srv.Close()
	select {
	case <-a.handlers.idle():
	case <-time.After(cancel):
		log.G(ctx).Errorf("admin API calls still running %s after they were cancelled; stopping without them", cancel)
	}
}

// inflight counts running handlers; idle is closed when none runs.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}
}

func (f *inflight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.zero = make(chan struct{})
	}
	f.n++
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		close(f.zero)
	}
}

func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return f.zero
}
