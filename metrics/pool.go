package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// scrapeTimeout bounds the status ioctl of one scrape: a wedged pool
// must not hang Prometheus' request.
const scrapeTimeout = 5 * time.Second

// PoolStatus reads a pool's status line; *dmpool.Pool is one.
type PoolStatus interface {
	Status(ctx context.Context) (dmpool.Status, error)
}

// PoolCollector reports the pool's usage and mode, read when Prometheus
// scrapes, so the figures are exactly what `status` would print then.
type PoolCollector struct {
	pool     PoolStatus
	refusing func(dmpool.Status) bool

	up, dataUsed, dataSize, metaUsed, metaSize, readOnly, needsCheck, failed, refusingWork *prometheus.Desc
}

// NewPoolCollector reads pool. refusing says whether new snapshots and
// imports are refused at a status (the daemon's full_threshold check);
// nil means never.
func NewPoolCollector(pool PoolStatus, refusing func(dmpool.Status) bool) *PoolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "pool", name), help, nil, nil)
	}
	return &PoolCollector{
		pool: pool, refusing: refusing,
		up:           d("up", "1 when the pool's status could be read at this scrape; the other pool metrics are missing when 0."),
		dataUsed:     d("data_used_bytes", "Data space allocated in the pool."),
		dataSize:     d("data_size_bytes", "Data space of the pool."),
		metaUsed:     d("metadata_used_bytes", "Metadata space allocated in the pool."),
		metaSize:     d("metadata_size_bytes", "Metadata space of the pool."),
		readOnly:     d("read_only", "1 when the kernel has switched the pool to read-only."),
		needsCheck:   d("needs_check", "1 when the pool's metadata needs thin_check."),
		failed:       d("failed", "1 when the kernel reports the pool as failed."),
		refusingWork: d("refusing_new_work", "1 while new snapshots and imports are refused ([pool] full_threshold reached or no space left)."),
	}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.dataUsed, c.dataSize, c.metaUsed, c.metaSize, c.readOnly, c.needsCheck, c.failed, c.refusingWork} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	st, err := c.pool.Status(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(c.up, 1)
	gauge(c.dataUsed, float64(st.UsedDataBlocks*st.DataBlockSize))
	gauge(c.dataSize, float64(st.TotalDataBlocks*st.DataBlockSize))
	gauge(c.metaUsed, float64(st.UsedMetaBytes()))
	gauge(c.metaSize, float64(st.TotalMetaBytes()))
	gauge(c.readOnly, flag(st.ReadOnly))
	gauge(c.needsCheck, flag(st.NeedsCheck))
	gauge(c.failed, flag(st.Fail))
	gauge(c.refusingWork, flag(st.Fail || st.ReadOnly || st.Full() || (c.refusing != nil && c.refusing(st))))
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
