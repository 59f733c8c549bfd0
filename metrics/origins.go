package metrics

import "github.com/prometheus/client_golang/prometheus"

// OriginFigures is one lazily-backed origin's figures at a moment.
type OriginFigures struct {
	Origin string
	// State is the origin's state (fetching, local, failed, broken).
	State                       string
	ChunksPresent, ChunksTotal  int
	OnDemandFetches, Prefetched int64
	ReadErrors                  int64
}

// OriginCollector reports the lazily-backed origins, read at scrape time.
type OriginCollector struct {
	read                  func() []OriginFigures
	chunks, fetches, errs *prometheus.Desc
}

// NewOriginCollector reports what read returns at each scrape.
func NewOriginCollector(read func() []OriginFigures) *OriginCollector {
	return &OriginCollector{
		read: read,
		chunks: prometheus.NewDesc("flyio_lazy_origin_chunks",
			"Chunks of a lazily-backed origin's block image: present in its cache, or in all (kind), with the origin's state.", []string{"origin", "state", "kind"}, nil),
		fetches: prometheus.NewDesc("flyio_lazy_fetches_total",
			"Chunks fetched into an origin's cache: because a reader wanted them (on_demand) or by the background fetch (prefetch).", []string{"origin", "kind"}, nil),
		errs: prometheus.NewDesc("flyio_lazy_read_errors_total",
			"Reads of an origin answered with an I/O error (a failed or timed-out fetch): each is an EIO a process got.", []string{"origin"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *OriginCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.chunks
	ch <- c.fetches
	ch <- c.errs
}

// Collect implements prometheus.Collector.
func (c *OriginCollector) Collect(ch chan<- prometheus.Metric) {
	for _, o := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.chunks, prometheus.GaugeValue, float64(o.ChunksPresent), o.Origin, o.State, "present")
		ch <- prometheus.MustNewConstMetric(c.chunks, prometheus.GaugeValue, float64(o.ChunksTotal), o.Origin, o.State, "total")
		ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.CounterValue, float64(o.OnDemandFetches), o.Origin, "on_demand")
		ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.CounterValue, float64(o.Prefetched), o.Origin, "prefetch")
		ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(o.ReadErrors), o.Origin)
	}
}
