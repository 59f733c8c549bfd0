package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metrics"
)

// memLayers is a remote layer store holding one layer in memory, whose
// diff id can be made wrong.
type memLayers struct {
	blob   []byte
	diffID string
}

func (l memLayers) Open(_ context.Context, labels map[string]string) (io.ReadCloser, string, bool, error) {
	if labels["test/in-store"] != "yes" {
		return nil, "", false, nil
	}
	return io.NopCloser(bytes.NewReader(l.blob)), l.diffID, true, nil
}

// TestRemoteFillMetricsOnDMThin fills a layer from a remote store onto a
// real thin device and checks the fill counted its run, its duration and
// exactly the blob's bytes; a layer the store lacks counts nothing, and
// one whose digest is wrong counts as a failed fill.
func TestRemoteFillMetricsOnDMThin(t *testing.T) {
	dmtest.Require(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := bytes.Repeat([]byte("layer\n"), 10000)
	tw.WriteHeader(&tar.Header{Name: "data", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write(content)
	tw.Close()
	blob := buf.Bytes()
	store := &memLayers{blob: blob, diffID: fmt.Sprintf("sha256:%x", sha256.Sum256(blob))}

	ctx := context.Background()
	m := metrics.New()
	sn, cleanup, err := realSnapshotterWith(ctx, t.TempDir(), Config{BaseSize: 64 << 20, Remote: store, RemoteFills: m.Fills(metrics.SourceLayer)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	prepare := func(key, ref string, inStore bool) error {
		labels := map[string]string{snapshots.LabelSnapshotRef: ref}
		if inStore {
			labels["test/in-store"] = "yes"
		}
		_, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(labels))
		return err
	}

	if err := prepare("extract-1", chainRef("layer1"), true); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of a layer the store holds: %v, want already exists", err)
	}
	want := map[string]float64{
		`flyio_s3_fill_runs_total{result="ok",source="layer"}`: 1,
		`flyio_s3_fetched_bytes_total{source="layer"}`:         float64(len(blob)),
		`flyio_extracted_bytes_total{source="layer"}`:          float64(len(blob)),
		`flyio_s3_fill_duration_seconds_count{source="layer"}`: 1,
		`flyio_s3_fill_runs_total{result="ok",source="image"}`: 0,
	}
	checkSeries(t, m, want)

	// Not in the store: a normal Prepare, no fill.
	if err := prepare("extract-2", chainRef("layer2"), false); err != nil {
		t.Fatal(err)
	}
	checkSeries(t, m, want)

	// A wrong digest fails the fill (the Prepare goes on without it).
	store.diffID = "sha256:" + fmt.Sprintf("%064d", 0)
	if err := prepare("extract-3", chainRef("layer3"), true); err != nil {
		t.Fatal(err)
	}
	// Its bytes were fetched and extracted all the same before the
	// digest could be checked.
	want[`flyio_s3_fill_duration_seconds_count{source="layer"}`] = 2
	want[`flyio_s3_fetched_bytes_total{source="layer"}`] = float64(2 * len(blob))
	want[`flyio_extracted_bytes_total{source="layer"}`] = float64(2 * len(blob))
	checkSeries(t, m, want)
	var failed float64
	for series, v := range gatherSeries(t, m) {
		if strings.HasPrefix(series, `flyio_s3_fill_runs_total{`) && series != `flyio_s3_fill_runs_total{result="ok",source="layer"}` && series != `flyio_s3_fill_runs_total{result="ok",source="image"}` {
			failed += v
		}
	}
	if failed != 1 {
		t.Errorf("failed layer fills counted %v, want 1: %v", failed, gatherSeries(t, m))
	}
}

func checkSeries(t *testing.T, m *metrics.Metrics, want map[string]float64) {
	t.Helper()
	got := gatherSeries(t, m)
	for series, v := range want {
		if got[series] != v {
			t.Errorf("%s = %v, want %v", series, got[series], v)
		}
	}
}

// gatherSeries flattens the registry into "name{labels}" -> value, with
// histograms as their _count.
func gatherSeries(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			var ls []string
			for _, lp := range mt.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			name := mf.GetName()
			lbl := ""
			if len(ls) > 0 {
				lbl = "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case mt.Counter != nil:
				out[name+lbl] = mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				out[name+lbl] = mt.GetGauge().GetValue()
			case mt.Histogram != nil:
				out[name+"_count"+lbl] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
