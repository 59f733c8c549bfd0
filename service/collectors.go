package service

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/lazy"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/metrics"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// registerCollectors adds what Prometheus reads at scrape time: the
// pool's usage and mode (refusing_new_work uses the same test as the pool
// guard), devices and runs from the metadata, and the importer's queues.
func registerCollectors(m *metrics.Metrics, pool *dmpool.Pool, guard *snapshotter.PoolGuard, store *metadata.Store, imp *importer.Importer, origins *lazy.Manager) error {
	refusing := func(st dmpool.Status) bool {
		return snapshotter.FullError(pool.Name(), "", st, guard.Threshold()) != nil
	}
	cs := []prometheus.Collector{
		metrics.NewPoolCollector(pool, refusing),
		metrics.NewStoreCollector(store),
		metrics.NewQueueCollector(func() []metrics.QueueDepth { return queueDepths(imp.Queues()) }),
	}
	if origins != nil {
		cs = append(cs, metrics.NewOriginCollector(func() []metrics.OriginFigures { return originFigures(origins.Status()) }))
	}
	return m.Register(cs...)
}

// originFigures maps the origins' status onto the metrics' labels.
func originFigures(st []lazy.OriginStatus) []metrics.OriginFigures {
	out := make([]metrics.OriginFigures, 0, len(st))
	for _, o := range st {
		out = append(out, metrics.OriginFigures{Origin: o.Name, State: string(o.State),
			ChunksPresent: o.ChunksPresent, ChunksTotal: o.ChunksTotal,
			OnDemandFetches: o.OnDemand, Prefetched: o.Prefetched, ReadErrors: o.ReadErrors})
	}
	return out
}

// queueDepths maps the importer's queues onto the metrics' labels.
func queueDepths(qs []importer.QueueInfo) []metrics.QueueDepth {
	out := make([]metrics.QueueDepth, 0, len(qs))
	for _, q := range qs {
		out = append(out, metrics.QueueDepth{Queue: q.Name, Active: q.Active, Waiting: q.Waiting, Capacity: q.Capacity})
	}
	return out
}
