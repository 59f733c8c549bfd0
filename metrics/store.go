package metrics

import (
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/superfly/flyio-image-manager/metadata"
)

// Every state is reported, 0 included, so a series never vanishes when
// its last device or run changes state.
var (
	deviceStates = []metadata.DeviceState{metadata.DeviceCreating, metadata.DeviceReady, metadata.DeviceDeleting,
		metadata.DeviceOrphaned, metadata.DeviceQuarantined}
	runStates = []metadata.RunState{metadata.RunQueued, metadata.RunDownloading, metadata.RunExtracting,
		metadata.RunCommitting, metadata.RunDone, metadata.RunFailed, metadata.RunCancelled}
	snapshotKinds = []snapshots.Kind{snapshots.KindActive, snapshots.KindView, snapshots.KindCommitted}
)

// StoreCollector reports the devices, snapshots and process-image runs
// the metadata database records, read in one transaction per scrape.
type StoreCollector struct {
	store *metadata.Store

	devices, orphaned, snapshots, runs, up *prometheus.Desc
	// troubleGen and refused are the pool trouble generation and the
	// active snapshots Commit refuses for it (metadata.PoolTrouble).
	troubleGen, refused *prometheus.Desc
}

// NewStoreCollector reads store.
func NewStoreCollector(store *metadata.Store) *StoreCollector {
	return &StoreCollector{
		store: store,
		devices: prometheus.NewDesc("flyio_devices",
			"Thin devices the metadata records, by state (creating, ready, deleting, orphaned, quarantined).", []string{"state"}, nil),
		orphaned: prometheus.NewDesc("flyio_orphaned_devices",
			"Thin devices left by a failed creation; 'flyio-image-manager gc --force' removes them.", nil, nil),
		snapshots: prometheus.NewDesc("flyio_snapshots",
			"Snapshots the metadata records, by kind (active, view, committed).", []string{"kind"}, nil),
		runs: prometheus.NewDesc("flyio_import_runs",
			"process-image runs the metadata records, by state.", []string{"state"}, nil),
		up: prometheus.NewDesc("flyio_metadata_up",
			"1 when the metadata database could be read at this scrape.", nil, nil),
		troubleGen: prometheus.NewDesc("flyio_pool_trouble_generation",
			"Pool trouble generation: raised each time the pool is seen out of data space, read-only, failed or needing a check, or with unexplained device-mapper events.", nil, nil),
		refused: prometheus.NewDesc("flyio_snapshots_refused_at_commit",
			"Active snapshots prepared before the latest pool trouble, whose Commit is refused (their writes may have been lost).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *StoreCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.orphaned, c.snapshots, c.runs, c.up, c.troubleGen, c.refused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StoreCollector) Collect(ch chan<- prometheus.Metric) {
	devices := map[metadata.DeviceState]int{}
	kinds := map[snapshots.Kind]int{}
	runs := map[metadata.RunState]int{}
	var trouble metadata.PoolTrouble
	refused := 0
	err := c.store.View(func(tx *metadata.Tx) (err error) {
		if trouble, err = tx.PoolTrouble(); err != nil {
			return err
		}
		if err := tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil {
				devices[d.State]++
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Snapshots(func(_ string, s *metadata.Snapshot, err error) error {
			if err == nil {
				kinds[s.Kind]++
				if trouble.Refuses(s) {
					refused++
				}
			}
			return nil
		}); err != nil {
			return err
		}
		rs, err := tx.Runs()
		for _, r := range rs {
			runs[r.State]++
		}
		return err
	})
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.troubleGen, prometheus.GaugeValue, float64(trouble.Generation))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.GaugeValue, float64(refused))
	for _, s := range union(deviceStates, devices) {
		ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(devices[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(c.orphaned, prometheus.GaugeValue, float64(devices[metadata.DeviceOrphaned]))
	for _, k := range union(snapshotKinds, kinds) {
		ch <- prometheus.MustNewConstMetric(c.snapshots, prometheus.GaugeValue, float64(kinds[k]), strings.ToLower(k.String()))
	}
	for _, s := range union(runStates, runs) {
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.GaugeValue, float64(runs[s]), string(s))
	}
}

// union is known followed by any other key of seen (a state a newer
// version wrote), each once.
func union[K comparable](known []K, seen map[K]int) []K {
	out := append([]K(nil), known...)
	for k := range seen {
		found := false
		for _, kk := range known {
			found = found || kk == k
		}
		if !found {
			out = append(out, k)
		}
	}
	return out
}
