package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/metrics"
)

// serveObservability starts the Prometheus endpoint on metrics_address
// (TCP, /metrics) and pprof on debug_address (a unix socket, mode 0600:
// profiles show memory contents and cost CPU), each only when
// configured. A listener that cannot be opened fails the start, as a
// mistyped address should; a server that dies later is logged but leaves
// the snapshotter serving. stop closes both.
func serveObservability(ctx context.Context, cfg config.Config, m *metrics.Metrics) (stop func(), err error) {
	var servers []*http.Server
	stop = func() {
		for _, s := range servers {
			s.Close()
		}
	}
	serve := func(what string, l net.Listener, h http.Handler) {
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.G(ctx).WithError(err).Errorf("%s server stopped", what)
			}
		}()
		log.G(ctx).Infof("serving %s on %s", what, l.Addr())
	}
	if cfg.MetricsAddress != "" {
		l, err := net.Listen("tcp", cfg.MetricsAddress)
		if err != nil {
			return stop, fmt.Errorf("metrics_address %q: %w", cfg.MetricsAddress, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		serve("metrics", l, mux)
	}
	if cfg.DebugAddress != "" {
		l, err := listen(cfg.DebugAddress, 0o600)
		if err != nil {
			stop()
			return func() {}, fmt.Errorf("debug_address %q: %w", cfg.DebugAddress, err)
		}
		serve("pprof", l, metrics.DebugHandler())
	}
	return stop, nil
}
