package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/metadata"
)

// fakeSnapshotter answers Prepare with mounts, Commit and Remove with the
// errors set on it; the other methods are not called.
type fakeSnapshotter struct {
	snapshots.Snapshotter
	commitErr, removeErr error
}

func (f *fakeSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return []mount.Mount{{Type: "ext4", Source: "/dev/mapper/x"}}, nil
}
func (f *fakeSnapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return f.commitErr
}
func (f *fakeSnapshotter) Remove(ctx context.Context, key string) error { return f.removeErr }

func TestSnapshotterCountsResults(t *testing.T) {
	m := New()
	sn := m.Snapshotter(&fakeSnapshotter{
		commitErr: fmt.Errorf("commit %q: %w", "k", errdefs.ErrFailedPrecondition),
		removeErr: fmt.Errorf("pool %q: %w", "p", dmpool.ErrNotFound),
	})
	ctx := context.Background()
	for range 3 {
		if _, err := sn.Prepare(ctx, "k", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := sn.Commit(ctx, "n", "k"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Commit returned %v, want the inner error unchanged", err)
	}
	sn.Remove(ctx, "k")
	sn.Remove(ctx, "k")
	if err := sn.(snapshots.Cleaner).Cleanup(ctx); !errdefs.IsNotImplemented(err) {
		t.Fatalf("Cleanup of a non-Cleaner returned %v, want not implemented", err)
	}

	for _, c := range []struct {
		op, result string
		want       float64
	}{
		{OpPrepare, "ok", 3},
		{OpCommit, "ok", 0},
		{OpCommit, "failed_precondition", 1},
		{OpRemove, "not_found", 2},
		{OpCleanup, "not_implemented", 1},
		{OpView, "ok", 0},
	} {
		if got := testutil.ToFloat64(m.ops.WithLabelValues(c.op, c.result)); got != c.want {
			t.Errorf("operations_total{operation=%q,result=%q} = %v, want %v", c.op, c.result, got, c.want)
		}
	}
	counts := histogramCounts(t, m, "flyio_snapshotter_operation_duration_seconds", "operation")
	for op, want := range map[string]uint64{OpPrepare: 3, OpCommit: 1, OpRemove: 2, OpCleanup: 1, OpView: 0} {
		if counts[op] != want {
			t.Errorf("duration histogram of %s has %d observations, want %d", op, counts[op], want)
		}
	}
}

// histogramCounts gathers the histogram name and returns its sample
// count by the value of label.
func histogramCounts(t *testing.T, m *Metrics, name, label string) map[string]uint64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == label {
					out[lp.GetValue()] = mt.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

func TestResult(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{fmt.Errorf("x: %w", dmpool.ErrPoolFull), "resource_exhausted"},
		{fmt.Errorf("x: %w", dmpool.ErrPoolReadOnly), "failed_precondition"},
		{fmt.Errorf("x: %w", errdefs.ErrAlreadyExists), "already_exists"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "deadline_exceeded"},
		{errors.New("mkfs.ext4 /dev/mapper/x: exit status 1"), "unknown"},
	} {
		if got := Result(c.err); got != c.want {
			t.Errorf("Result(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestFillCountsBytesAsTheyComeAndOnce(t *testing.T) {
	m := New()
	fl := m.Fills(SourceImage).Start()
	fl.Progress(extract.Progress{CompressedBytes: 100, Bytes: 300})
	fetched := m.fetched.WithLabelValues(SourceImage)
	if got := testutil.ToFloat64(fetched); got != 100 {
		t.Errorf("fetched after first progress = %v, want 100", got)
	}
	fl.Progress(extract.Progress{CompressedBytes: 250, Bytes: 700})
	fl.Done(extract.Result{CompressedBytes: 400, Bytes: 1000}, nil)
	if got := testutil.ToFloat64(fetched); got != 400 {
		t.Errorf("fetched = %v, want 400", got)
	}
	if got := testutil.ToFloat64(m.extracted.WithLabelValues(SourceImage)); got != 1000 {
		t.Errorf("extracted = %v, want 1000", got)
	}
	// A failed fill whose result carries nothing counts only its run.
	bad := m.Fills(SourceImage).Start()
	bad.Progress(extract.Progress{CompressedBytes: 10})
	bad.Done(extract.Result{}, fmt.Errorf("extracting: %w", errdefs.ErrInvalidArgument))
	if got := testutil.ToFloat64(fetched); got != 410 {
		t.Errorf("fetched after a failed fill = %v, want 410", got)
	}
	if got := testutil.ToFloat64(m.fillRuns.WithLabelValues(SourceImage, "invalid_argument")); got != 1 {
		t.Errorf("fill_runs_total{result=invalid_argument} = %v, want 1", got)
	}
	if got := histogramCounts(t, m, "flyio_s3_fill_duration_seconds", "source")[SourceImage]; got != 2 {
		t.Errorf("fill duration has %d observations, want 2", got)
	}
	if got := testutil.ToFloat64(m.fetched.WithLabelValues(SourceLayer)); got != 0 {
		t.Errorf("layer fetched = %v, want 0", got)
	}

	// Code running without metrics holds a nil *Fills.
	var none *Fills
	nf := none.Start()
	nf.Progress(extract.Progress{CompressedBytes: 1})
	nf.Done(extract.Result{}, nil)
}

type fakePool struct {
	st  dmpool.Status
	err error
}

func (f fakePool) Status(context.Context) (dmpool.Status, error) { return f.st, f.err }

func TestPoolCollector(t *testing.T) {
	st := dmpool.Status{UsedDataBlocks: 10, TotalDataBlocks: 100, DataBlockSize: 128 << 10,
		UsedMetaBlocks: 20, TotalMetaBlocks: 1000, NeedsCheck: true}
	c := NewPoolCollector(fakePool{st: st}, func(s dmpool.Status) bool { return s.UsedDataBlocks >= 10 })
	want := `
# HELP flyio_pool_data_size_bytes Data space of the pool.
# TYPE flyio_pool_data_size_bytes gauge
flyio_pool_data_size_bytes 1.31072e+07
# HELP flyio_pool_data_used_bytes Data space allocated in the pool.
# TYPE flyio_pool_data_used_bytes gauge
flyio_pool_data_used_bytes 1.31072e+06
# HELP flyio_pool_metadata_size_bytes Metadata space of the pool.
# TYPE flyio_pool_metadata_size_bytes gauge
flyio_pool_metadata_size_bytes 4.096e+06
# HELP flyio_pool_metadata_used_bytes Metadata space allocated in the pool.
# TYPE flyio_pool_metadata_used_bytes gauge
flyio_pool_metadata_used_bytes 81920
# HELP flyio_pool_needs_check 1 when the pool's metadata needs thin_check.
# TYPE flyio_pool_needs_check gauge
flyio_pool_needs_check 1
# HELP flyio_pool_read_only 1 when the kernel has switched the pool to read-only.
# TYPE flyio_pool_read_only gauge
flyio_pool_read_only 0
# HELP flyio_pool_refusing_new_work 1 while new snapshots and imports are refused ([pool] full_threshold reached or no space left).
# TYPE flyio_pool_refusing_new_work gauge
flyio_pool_refusing_new_work 1
`
	names := []string{"flyio_pool_data_size_bytes", "flyio_pool_data_used_bytes", "flyio_pool_metadata_size_bytes",
		"flyio_pool_metadata_used_bytes", "flyio_pool_needs_check", "flyio_pool_read_only", "flyio_pool_refusing_new_work"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	// A pool whose status cannot be read reports only up = 0.
	down := NewPoolCollector(fakePool{err: dmpool.ErrPoolMissing}, nil)
	if n := testutil.CollectAndCount(down); n != 1 {
		t.Errorf("a failing pool collector gave %d metrics, want 1 (up)", n)
	}
	if err := testutil.CollectAndCompare(down, strings.NewReader("# HELP flyio_pool_up 1 when the pool's status could be read at this scrape; the other pool metrics are missing when 0.\n# TYPE flyio_pool_up gauge\nflyio_pool_up 0\n")); err != nil {
		t.Error(err)
	}
}

func TestStoreCollector(t *testing.T) {
	store, err := metadata.Open(filepath.Join(t.TempDir(), "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	err = store.Update(func(tx *metadata.Tx) error {
		for id, st := range map[uint32]metadata.DeviceState{1: metadata.DeviceReady, 2: metadata.DeviceReady, 3: metadata.DeviceOrphaned} {
			if err := tx.PutDevice(&metadata.Device{ID: id, Name: fmt.Sprint("d", id), State: st}); err != nil {
				return err
			}
		}
		if err := tx.CreateSnapshot(&metadata.Snapshot{Key: "base", Kind: snapshots.KindCommitted, DeviceID: 1}); err != nil {
			return err
		}
		for i, st := range []metadata.RunState{metadata.RunDone, metadata.RunDone, metadata.RunExtracting} {
			if err := tx.PutRun(&metadata.Run{ID: fmt.Sprint("r", i), State: st}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := NewStoreCollector(store)
	want := `
# HELP flyio_devices Thin devices the metadata records, by state (creating, ready, deleting, orphaned, quarantined).
# TYPE flyio_devices gauge
flyio_devices{state="creating"} 0
flyio_devices{state="deleting"} 0
flyio_devices{state="orphaned"} 1
flyio_devices{state="quarantined"} 0
flyio_devices{state="ready"} 2
# HELP flyio_orphaned_devices Thin devices left by a failed creation; 'flyio-image-manager gc --force' removes them.
# TYPE flyio_orphaned_devices gauge
flyio_orphaned_devices 1
# HELP flyio_import_runs process-image runs the metadata records, by state.
# TYPE flyio_import_runs gauge
flyio_import_runs{state="cancelled"} 0
flyio_import_runs{state="committing"} 0
flyio_import_runs{state="done"} 2
flyio_import_runs{state="downloading"} 0
flyio_import_runs{state="extracting"} 1
flyio_import_runs{state="failed"} 0
flyio_import_runs{state="queued"} 0
# HELP flyio_snapshots Snapshots the metadata records, by kind (active, view, committed).
# TYPE flyio_snapshots gauge
flyio_snapshots{kind="active"} 0
flyio_snapshots{kind="committed"} 1
flyio_snapshots{kind="view"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "flyio_devices", "flyio_orphaned_devices", "flyio_import_runs", "flyio_snapshots"); err != nil {
		t.Error(err)
	}
}

// TestStoreCollectorTrouble: the pool trouble generation and the active
// snapshots prepared before it (whose Commit is refused) are gauges.
func TestStoreCollectorTrouble(t *testing.T) {
	store, err := metadata.Open(filepath.Join(t.TempDir(), "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	err = store.Update(func(tx *metadata.Tx) error {
		pt := metadata.PoolTrouble{}
		pt.Bump("pool out of data space", time.Now())
		pt.Bump("2 device-mapper events on the pool", time.Now())
		if err := tx.PutPoolTrouble(pt); err != nil {
			return err
		}
		for i, s := range []*metadata.Snapshot{
			{Key: "before", Kind: snapshots.KindActive, TroubleGen: 0},
			{Key: "between", Kind: snapshots.KindActive, TroubleGen: 1},
			{Key: "after", Kind: snapshots.KindActive, TroubleGen: 2},
			{Key: "view", Kind: snapshots.KindView, TroubleGen: 0},
			{Key: "layer", Kind: snapshots.KindCommitted, TroubleGen: 0},
		} {
			s.DeviceID = uint32(i + 1)
			if err := tx.CreateSnapshot(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `
# HELP flyio_pool_trouble_generation Pool trouble generation: raised each time the pool is seen out of data space, read-only, failed or needing a check, or with unexplained device-mapper events.
# TYPE flyio_pool_trouble_generation gauge
flyio_pool_trouble_generation 2
# HELP flyio_snapshots_refused_at_commit Active snapshots prepared before the latest pool trouble, whose Commit is refused (their writes may have been lost).
# TYPE flyio_snapshots_refused_at_commit gauge
flyio_snapshots_refused_at_commit 2
`
	if err := testutil.CollectAndCompare(NewStoreCollector(store), strings.NewReader(want), "flyio_pool_trouble_generation", "flyio_snapshots_refused_at_commit"); err != nil {
		t.Error(err)
	}
}

func TestQueueCollector(t *testing.T) {
	c := NewQueueCollector(func() []QueueDepth {
		return []QueueDepth{{Queue: QueueDownloads, Active: 2, Waiting: 5, Capacity: 2}}
	})
	want := `
# HELP flyio_queue_depth Work in a queue: active (holding a slot) or waiting for one.
# TYPE flyio_queue_depth gauge
flyio_queue_depth{kind="active",queue="downloads"} 2
flyio_queue_depth{kind="waiting",queue="downloads"} 5
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "flyio_queue_depth"); err != nil {
		t.Error(err)
	}
}

// TestNamesFollowConventions runs promlint over everything the daemon
// registers, and checks the page serves the names dashboards use.
func TestNamesFollowConventions(t *testing.T) {
	m := New()
	store, err := metadata.Open(filepath.Join(t.TempDir(), "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := m.Register(
		NewPoolCollector(fakePool{st: dmpool.Status{TotalDataBlocks: 1, DataBlockSize: 65536}}, nil),
		NewStoreCollector(store),
		NewQueueCollector(func() []QueueDepth { return []QueueDepth{{Queue: QueueUnpacks}} }),
	); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "flyio_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		"flyio_snapshotter_operations_total", "flyio_snapshotter_operation_duration_seconds_bucket",
		"flyio_s3_fill_duration_seconds_count", "flyio_s3_fill_runs_total", "flyio_s3_fetched_bytes_total",
		"flyio_extracted_bytes_total", "flyio_pool_data_used_bytes", "flyio_devices", "flyio_import_runs",
		"flyio_queue_depth", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(string(body), "\n"+name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestDebugHandlerServesPprof(t *testing.T) {
	srv := httptest.NewServer(DebugHandler())
	defer srv.Close()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	if resp, err := http.Get(srv.URL + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("the debug handler serves /metrics: %s", resp.Status)
		}
	}
}
