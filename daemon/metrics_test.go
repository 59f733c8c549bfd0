package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/metrics"
)

// TestObservabilityServers starts the metrics endpoint on a free TCP port
// and pprof on a unix socket, and checks both answer, the socket is 0600
// and neither serves the other's paths.
func TestObservabilityServers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := config.Default()
	cfg.MetricsAddress = addr
	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "fim-debug-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg.DebugAddress = filepath.Join(dir, "debug.sock")

	m := metrics.New()
	stop, err := serveObservability(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	tcp := &http.Client{}
	body, status := get(t, tcp, "http://"+addr+"/metrics")
	if status != http.StatusOK || !strings.Contains(body, "flyio_snapshotter_operations_total") {
		t.Errorf("GET /metrics: %d\n%.500s", status, body)
	}
	if _, status := get(t, tcp, "http://"+addr+"/debug/pprof/"); status != http.StatusNotFound {
		t.Errorf("the metrics address serves pprof (%d); it must only be on the debug socket", status)
	}

	fi, err := os.Stat(cfg.DebugAddress)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("debug socket mode %v, want 0600", fi.Mode().Perm())
	}
	unix := unixClient(cfg.DebugAddress)
	body, status = get(t, unix, "http://debug/debug/pprof/heap?debug=1")
	if status != http.StatusOK || !strings.Contains(body, "heap profile") {
		t.Errorf("GET /debug/pprof/heap over the socket: %d\n%.300s", status, body)
	}
	if _, status := get(t, unix, "http://debug/metrics"); status != http.StatusNotFound {
		t.Errorf("the debug socket serves /metrics (%d)", status)
	}
}

func TestObservabilityOffByDefault(t *testing.T) {
	stop, err := serveObservability(context.Background(), config.Default(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	stop()
}

func TestObservabilityBadAddress(t *testing.T) {
	cfg := config.Default()
	cfg.MetricsAddress = "127.0.0.1:notaport"
	if _, err := serveObservability(context.Background(), cfg, metrics.New()); err == nil || !strings.Contains(err.Error(), "metrics_address") {
		t.Errorf("bad metrics_address gave %v, want an error naming the key", err)
	}
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

func get(t *testing.T, c *http.Client, url string) (string, int) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// TestSetupLoggingJSON checks log_format = "json" turns containerd/log's
// logger into one JSON object per line with the context's fields as keys,
// and that log_level is applied and checked.
func TestSetupLoggingJSON(t *testing.T) {
	logger := log.L.Logger
	oldOut, oldFormatter, oldLevel := logger.Out, logger.Formatter, logger.GetLevel()
	defer func() {
		logger.SetOutput(oldOut)
		logger.SetFormatter(oldFormatter)
		logger.SetLevel(oldLevel)
	}()
	var buf bytes.Buffer
	logger.SetOutput(&buf)

	cfg := config.Default()
	cfg.LogLevel, cfg.LogFormat = "debug", "json"
	if err := SetupLogging(cfg); err != nil {
		t.Fatal(err)
	}
	ctx := log.WithLogger(context.Background(), log.G(context.Background()).WithFields(log.Fields{"key": "k1", "device_id": 7, "run": "r1", "s3_key": "images/a.tar"}))
	log.G(ctx).Debug("debug line")
	log.G(ctx).Info("info line")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines at debug level, got:\n%s", buf.String())
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %v: %s", err, l)
		}
		for k, v := range map[string]any{"key": "k1", "device_id": float64(7), "run": "r1", "s3_key": "images/a.tar"} {
			if m[k] != v {
				t.Errorf("line %s: %s = %v, want %v", l, k, m[k], v)
			}
		}
	}

	cfg.LogLevel = "warn"
	if err := SetupLogging(cfg); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	log.G(ctx).Info("hidden")
	if buf.Len() != 0 {
		t.Errorf("info line logged at log_level = warn: %s", buf.String())
	}
	cfg.LogLevel = "loud"
	if err := SetupLogging(cfg); err == nil || !strings.Contains(err.Error(), "log_level") {
		t.Errorf("log_level = loud gave %v", err)
	}
}
