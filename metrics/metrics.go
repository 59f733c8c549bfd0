// Package metrics is the daemon's Prometheus instrumentation: counters
// and latency histograms of the snapshotter's operations (a
// snapshots.Snapshotter decorator), of S3 fills, and collectors that read
// the pool, the metadata and the queues when Prometheus scrapes.
//
// Everything is registered on the Metrics' own registry, never on the
// global default one, so tests and a second daemon in one process never
// collide.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric this package defines.
const namespace = "flyio"

// Metrics holds the daemon's registry and the metrics updated as work
// happens. Collectors read at scrape time are added with Register.
type Metrics struct {
	reg *prometheus.Registry

	ops        *prometheus.CounterVec
	opDuration *prometheus.HistogramVec

	fillRuns     *prometheus.CounterVec
	fillDuration *prometheus.HistogramVec
	fetched      *prometheus.CounterVec
	extracted    *prometheus.CounterVec
}

// New returns metrics on a fresh registry that also carries the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "snapshotter", Name: "operations_total",
			Help: "Snapshotter operations by operation and result (ok or the error kind).",
		}, []string{"operation", "result"}),
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "snapshotter", Name: "operation_duration_seconds",
			Help: "Latency of snapshotter operations, successful or not.",
			// From a metadata-only Stat (sub-millisecond) to a Prepare
			// that makes a template or fills a remote layer (seconds).
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"operation"}),
		fillRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "s3", Name: "fill_runs_total",
			Help: "S3 fills (an image tarball or a layer streamed through the extractor onto a device) by source and result.",
		}, []string{"source", "result"}),
		fillDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "s3", Name: "fill_duration_seconds",
			Help: "Duration of one S3 fill, from opening the object (including any wait for a download slot) to the last entry extracted.",
			// Layers take a second, large images tens of minutes.
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600},
		}, []string{"source"}),
		fetched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "s3", Name: "fetched_bytes_total",
			Help: "Bytes read from S3 objects (compressed, as stored) by S3 fills.",
		}, []string{"source"}),
		extracted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "extracted_bytes_total",
			Help: "Bytes of uncompressed tar stream the extractor applied onto devices.",
		}, []string{"source"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.ops, m.opDuration, m.fillRuns, m.fillDuration, m.fetched, m.extracted,
	)
	// Series that exist from the start read 0 rather than "no data", so
	// rate() and alerts work before the first operation.
	for _, op := range Operations {
		m.ops.WithLabelValues(op, ResultOK)
		m.opDuration.WithLabelValues(op)
	}
	for _, src := range []string{SourceImage, SourceLayer} {
		m.fillRuns.WithLabelValues(src, ResultOK)
		m.fillDuration.WithLabelValues(src)
		m.fetched.WithLabelValues(src)
		m.extracted.WithLabelValues(src)
	}
	return m
}

// Registry is the registry everything is registered on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Register adds collectors read at scrape time (pool, metadata, queues).
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the registry in the Prometheus exposition format. A
// collector that fails (the pool is gone) drops its own metrics from the
// scrape, not the whole page.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:      m.reg, // promhttp_metric_handler_errors_total
		ErrorHandling: promhttp.ContinueOnError,
	})
}
