package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestCommitRefusesAKernelIOErrorOnDMThin: writes to a thin device fail
// while the pool stays in write mode (its table swapped for the "error"
// target for a moment, as a failing disk errors provisioned blocks
// without any mode change). Only the kernel's log says so ("Buffer I/O
// error on dev dm-N ... lost async page write"); Commit must refuse the
// snapshot. Before the kernel log was read, it committed it.
func TestCommitRefusesAKernelIOErrorOnDMThin(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	sn, pool, cleanup, err := realSnapshotterSized(ctx, t.TempDir(), Config{BaseSize: 256 << 20}, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	})
	m, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(m[0].Source)
	thin, err := dmpool.Table(name)
	if err != nil {
		t.Fatal(err)
	}
	swap := func(table []dmpool.Target) {
		t.Helper()
		if err := dmpool.LoadTable(name, table); err != nil {
			t.Fatal(err)
		}
		if err := dmpool.Suspend(name); err != nil {
			t.Fatal(err)
		}
		if err := dmpool.Resume(name); err != nil {
			t.Fatal(err)
		}
	}
	swap([]dmpool.Target{{Start: 0, Length: thin[0].Length, Type: "error"}})
	f, err := os.OpenFile(m[0].Source, os.O_WRONLY, 0)
	if err != nil {
		swap(thin)
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if _, err := f.WriteAt(buf, 128<<20); err != nil {
		t.Logf("write: %v", err)
	}
	// The writeback fails; the error is the writer's to see, and the
	// applier never asks (it does not syncfs).
	t.Logf("fsync of the failing device: %v", f.Sync())
	f.Close()
	swap(thin)

	st, err := pool.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tr := st.Trouble(); tr != "" {
		t.Fatalf("the pool's mode changed (%s): this test is about errors without a mode change", tr)
	}
	err = sn.Commit(ctx, "base", "a")
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "I/O error") {
		t.Fatalf("Commit after writes to its device failed: %v; want a refusal naming the kernel's I/O error", err)
	}
	t.Logf("refused: %v", err)
}
