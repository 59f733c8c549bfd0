package metrics

import "github.com/prometheus/client_golang/prometheus"

// Queue names, the queue label values.
const (
	QueueDownloads = "downloads"
	QueueUnpacks   = "unpacks"
)

// QueueDepth is one queue's occupancy at a moment.
type QueueDepth struct {
	Queue    string
	Active   int
	Waiting  int
	Capacity int
}

// QueueCollector reports the queues' occupancy, read at scrape time.
type QueueCollector struct {
	read            func() []QueueDepth
	depth, capacity *prometheus.Desc
}

// NewQueueCollector reports what read returns at each scrape.
func NewQueueCollector(read func() []QueueDepth) *QueueCollector {
	return &QueueCollector{
		read: read,
		depth: prometheus.NewDesc("flyio_queue_depth",
			"Work in a queue: active (holding a slot) or waiting for one.", []string{"queue", "kind"}, nil),
		capacity: prometheus.NewDesc("flyio_queue_capacity",
			"How many may hold a slot of the queue at once.", []string{"queue"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.capacity
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	for _, q := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(q.Active), q.Queue, "active")
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(q.Waiting), q.Queue, "waiting")
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(q.Capacity), q.Queue)
	}
}
