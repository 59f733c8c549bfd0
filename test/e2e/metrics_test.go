package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestMetrics runs the daemon with metrics_address, debug_address and
// JSON logs at debug level, imports an image from S3 and runs a container
// on it, then checks what an operator would scrape, profile and grep:
// the snapshotter's counters and histograms moved, the S3 fill counted
// its bytes, the pool gauges say what status says, pprof answers on the
// unix socket, and the log is JSON lines naming snapshot keys and devices.
func TestMetrics(t *testing.T) {
	dmtest.Require(t)
	// No spares: nothing changes the pool in the background, so a scrape
	// and a status taken together agree exactly.
	s := startS3Env(t, withSpares(0))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	debugSock := filepath.Join(s.Dir, "debug.sock")
	// These are top-level keys, which withDaemonTOML cannot add (it
	// appends after the last table): restart the daemon on a config
	// that starts with them.
	s.StopDaemon()
	cfgText, err := os.ReadFile(s.CfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, s.CfgPath, fmt.Sprintf("metrics_address = %q\ndebug_address = %q\nlog_level = \"debug\"\nlog_format = \"json\"\n%s",
		metricsAddr, debugSock, cfgText))
	if s.Cfg, err = config.Load(s.CfgPath, true); err != nil {
		t.Fatal(err)
	}
	s.StartDaemon("daemon.log")
	s.WaitDaemon()

	const key, hello = "images/metrics-busybox.tar", "hello from the metrics test\n"
	s.putBusybox(key, hello)
	out, err := s.processImage(cmdTimeout, "--s3-key", key)
	if err != nil {
		t.Fatal(err)
	}
	run := runID(t, out)
	const ref = "images.flyio.local/metrics-busybox:latest"
	if got := s.Ctr("run", "--rm", "--snapshotter", "flyio", ref, "metrics1", "/bin/sh", "-c", "cat /etc/hello"); got != hello {
		t.Errorf("container printed %q, want %q", got, hello)
	}

	mf := scrapeMetrics(t, "http://"+metricsAddr+"/metrics")
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"flyio_snapshotter_operations_total", map[string]string{"operation": "prepare", "result": "ok"}},
		{"flyio_snapshotter_operations_total", map[string]string{"operation": "commit", "result": "ok"}},
		{"flyio_s3_fill_runs_total", map[string]string{"source": "image", "result": "ok"}},
		{"flyio_s3_fetched_bytes_total", map[string]string{"source": "image"}},
		{"flyio_extracted_bytes_total", map[string]string{"source": "image"}},
		{"flyio_import_runs", map[string]string{"state": "done"}},
		{"process_resident_memory_bytes", nil},
	} {
		if v := metricValue(t, mf, c.name, c.labels); v <= 0 {
			t.Errorf("%s%v = %v, want > 0", c.name, c.labels, v)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"flyio_snapshotter_operation_duration_seconds", map[string]string{"operation": "prepare"}},
		{"flyio_snapshotter_operation_duration_seconds", map[string]string{"operation": "commit"}},
		{"flyio_s3_fill_duration_seconds", map[string]string{"source": "image"}},
	} {
		if n := metricHistogramCount(t, mf, c.name, c.labels); n == 0 {
			t.Errorf("%s%v has no observations", c.name, c.labels)
		}
	}
	// The fill read the whole object: its size is what S3 holds.
	if st, err := s.up.Stat(context.Background(), key); err != nil {
		t.Fatal(err)
	} else if got := metricValue(t, mf, "flyio_s3_fetched_bytes_total", map[string]string{"source": "image"}); got < float64(st.Size) {
		t.Errorf("flyio_s3_fetched_bytes_total = %v, want at least the object's %d bytes", got, st.Size)
	}
	for _, q := range []string{"downloads", "unpacks"} {
		for _, kind := range []string{"active", "waiting"} {
			if v := metricValue(t, mf, "flyio_queue_depth", map[string]string{"queue": q, "kind": kind}); v != 0 {
				t.Errorf("flyio_queue_depth{queue=%q,kind=%q} = %v with nothing running, want 0", q, kind, v)
			}
		}
	}
	checkPoolGauges(t, s, "http://"+metricsAddr+"/metrics")

	// pprof, over the 0600 unix socket only.
	if fi, err := os.Stat(debugSock); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("debug socket %s has mode %v, want 0600", debugSock, fi.Mode().Perm())
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", debugSock)
		},
	}}
	for path, want := range map[string]string{"/debug/pprof/heap?debug=1": "heap profile", "/debug/pprof/goroutine?debug=1": "goroutine profile"} {
		body, status := metricsGet(t, hc, "http://debug"+path)
		if status != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s on %s: %d\n%.300s", path, debugSock, status, body)
		}
	}
	if body, status := metricsGet(t, hc, "http://debug/debug/pprof/heap"); status != http.StatusOK || len(body) == 0 {
		t.Errorf("GET /debug/pprof/heap (binary profile): %d, %d bytes", status, len(body))
	}

	checkJSONLog(t, s.Daemon.Log, run)
}

// checkPoolGauges compares the pool gauges with the admin API's status.
// Both read the pool's status line and the device inventory; the status
// taken before and the one after the scrape must agree for the comparison
// to be exact (containerd may still be removing the container's snapshot,
// its device going from deleting to gone), so it retries.
func checkPoolGauges(t *testing.T, s *s3env, url string) {
	t.Helper()
	status := func() admin.Status {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := s.admin().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for attempt := 1; ; attempt++ {
		before := status()
		mf := scrapeMetrics(t, url)
		after := status()
		stable := before.PoolState == after.PoolState && maps.Equal(before.Devices, after.Devices) &&
			before.Refusing == after.Refusing
		if !stable && attempt < 10 {
			time.Sleep(time.Second)
			continue
		}
		ps := after.PoolState
		for name, want := range map[string]uint64{
			"flyio_pool_data_used_bytes":     ps.UsedDataBlocks * ps.DataBlockSize,
			"flyio_pool_data_size_bytes":     ps.TotalDataBlocks * ps.DataBlockSize,
			"flyio_pool_metadata_used_bytes": ps.UsedMetaBlocks * 4096,
			"flyio_pool_metadata_size_bytes": ps.TotalMetaBlocks * 4096,
		} {
			if got := metricValue(t, mf, name, nil); got != float64(want) {
				t.Errorf("%s = %v, status says %d (pool status %+v)", name, got, want, ps)
			}
		}
		if ps.TotalDataBlocks == 0 || ps.DataBlockSize == 0 {
			t.Errorf("status reports an empty pool: %+v", ps)
		}
		for name, want := range map[string]bool{"flyio_pool_read_only": ps.ReadOnly, "flyio_pool_needs_check": ps.NeedsCheck, "flyio_pool_refusing_new_work": after.Refusing != ""} {
			if got := metricValue(t, mf, name, nil); got != map[bool]float64{true: 1}[want] {
				t.Errorf("%s = %v, status says %v", name, got, want)
			}
		}
		for state, n := range after.Devices {
			if got := metricValue(t, mf, "flyio_devices", map[string]string{"state": state}); got != float64(n) {
				t.Errorf("flyio_devices{state=%q} = %v, status says %d", state, got, n)
			}
		}
		if got := metricValue(t, mf, "flyio_orphaned_devices", nil); got != float64(after.Devices["orphaned"]) {
			t.Errorf("flyio_orphaned_devices = %v, status says %d", got, after.Devices["orphaned"])
		}
		t.Logf("pool: data %d/%d blocks of %d bytes, metadata %d/%d blocks; devices %v (after %d attempts)",
			ps.UsedDataBlocks, ps.TotalDataBlocks, ps.DataBlockSize, ps.UsedMetaBlocks, ps.TotalMetaBlocks, after.Devices, attempt)
		return
	}
}

// checkJSONLog parses every line of the daemon's log as JSON and looks
// for a Prepare's line with the snapshot key and device, and for the
// run's line with its run id and S3 key.
func checkJSONLog(t *testing.T, path, run string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines, bad int
	var snapLine, runLine map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		lines++
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			if bad++; bad <= 5 {
				t.Errorf("daemon log line is not JSON: %v: %s", err, sc.Text())
			}
			continue
		}
		if snapLine == nil && m["key"] != nil && m["device_id"] != nil && m["device"] != nil && strings.HasPrefix(fmt.Sprint(m["msg"]), "snapshot prepared") {
			snapLine = m
		}
		if runLine == nil && m["run"] == run && m["s3_key"] != nil {
			runLine = m
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("daemon log: %d JSON lines, %d not JSON", lines-bad, bad)
	if snapLine == nil {
		t.Errorf("no daemon log line with key, device_id and device for a Prepare")
	} else {
		t.Logf("snapshot line: %v", snapLine)
	}
	if runLine == nil {
		t.Errorf("no daemon log line with run %s and its s3_key", run)
	} else {
		t.Logf("run line: %v", runLine)
	}
}

func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	body, status := metricsGet(t, &http.Client{Timeout: time.Minute}, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", url, status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return mf
}

func metricsGet(t *testing.T, c *http.Client, url string) (string, int) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

// metricSeries returns the series of family name whose labels include labels.
func metricSeries(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	fam, ok := mf[name]
	if !ok {
		t.Fatalf("no metric %s in the scrape", name)
	}
	for _, m := range fam.GetMetric() {
		match := 0
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; ok && v == lp.GetValue() {
				match++
			}
		}
		if match == len(labels) {
			return m
		}
	}
	t.Fatalf("no series %s%v in the scrape", name, labels)
	return nil
}

// metricValue is a counter's or gauge's value.
func metricValue(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := metricSeries(t, mf, name, labels)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s is neither a counter nor a gauge", name)
	return 0
}

func metricHistogramCount(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels map[string]string) uint64 {
	t.Helper()
	return metricSeries(t, mf, name, labels).GetHistogram().GetSampleCount()
}
