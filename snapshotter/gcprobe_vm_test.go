package snapshotter

import (
	"context"
	"os"
	"testing"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// TestLeftoverGCProbeOnDMThin: on real dm-thin, a probe device like the
// one a gc killed inside ConfirmMissing leaves is listed by Probes, kept
// while it is open, and removed by the start-up clean-up once unused,
// the thin id's own device and data untouched.
func TestLeftoverGCProbeOnDMThin(t *testing.T) {
	ctx := context.Background()
	sn := spareLessSnapshotter(t)
	m, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	writeFileVia(t, m, "f", "kept")
	id := recordOf(t, sn, "a").DeviceID
	probe := probeName(sn.pool.Name(), id)
	if _, err := sn.pool.Activate(ctx, probe, id, 512); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dmpool.DevicePath(probe))
	if err != nil {
		t.Fatal(err)
	}
	sn.removeLeftoverProbes(ctx)
	probes, err := sn.Probes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(probes) != 1 || probes[0].Name != probe || probes[0].ID != id || probes[0].OpenCount != 1 {
		t.Fatalf("probes %+v, want the open %s", probes, probe)
	}
	f.Close()
	sn.removeLeftoverProbes(ctx)
	if probes, err = sn.Probes(ctx); err != nil || len(probes) != 0 {
		t.Fatalf("probes %+v, %v after clean-up, want none", probes, err)
	}
	if got := readFileVia(t, m, "f"); got != "kept" {
		t.Fatalf("snapshot content %q after the probe's removal", got)
	}
}
