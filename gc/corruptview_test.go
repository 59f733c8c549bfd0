package gc

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
)

// realPoolMetadata is thinmeta's fixture: real thin-pool metadata
// (thin_restore) with the 200 thin ids 3, 6, ... 600, whose first
// device-details leaf is block 18.
func realPoolMetadata(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open("../dmpool/thinmeta/testdata/pool.meta.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recordLayersOn records a committed snapshot of ours on each thin id.
func (w *world) recordLayersOn(ids ...uint32) {
	err := w.store.Update(func(tx *metadata.Tx) error {
		for _, id := range ids {
			key := fmt.Sprintf("default/%d/sha256:layer%d", id, id)
			if err := tx.PutDevice(&metadata.Device{ID: id, State: metadata.DeviceReady, Role: metadata.RoleSnapshot, Owner: key}); err != nil {
				return err
			}
			if err := tx.CreateSnapshot(&metadata.Snapshot{Key: key, Kind: snapshots.KindCommitted, State: metadata.SnapshotReady,
				DeviceID: id, Created: w.old, Updated: w.old}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

// A view of the pool read from metadata that fails the kernel's own
// checks (here one flipped bit in a thin id: device 18 would read as 19,
// so 18's layer would look like a record without device and 19 like a
// device nobody recorded) is never judged: Plan fails with no report,
// so nothing can be applied, and the error says what is wrong where.
func TestPlanRefusesACorruptPoolView(t *testing.T) {
	w := newWorld(t)
	var ids []uint32
	for id := uint32(3); id <= 600; id += 3 {
		ids = append(ids, id)
	}
	w.recordLayersOn(ids...)
	meta := realPoolMetadata(t)
	read := func(context.Context) (*thinmeta.Metadata, error) {
		md, err := thinmeta.Read(bytes.NewReader(meta), 0)
		if err != nil {
			// As ReadPool wraps it.
			return nil, fmt.Errorf("pool %q: metadata snapshot at block %d: %w", "pool", 0, err)
		}
		return md, nil
	}
	ctx := context.Background()
	rep, err := Plan(ctx, "pool", read, w.store, nil, Options{})
	if err != nil || len(rep.Items) != 0 {
		t.Fatalf("the intact view: %v, %+v; want nothing to clean", err, rep)
	}

	meta[18*thinmeta.BlockSize+32+5*8] ^= 0x01 // the sixth key of leaf 18: thin id 18
	rep, err = Plan(ctx, "pool", read, w.store, nil, Options{})
	if err == nil {
		col := &fakeCollector{} // a live pool without the devices
		Apply(ctx, rep, col, nil)
		t.Fatalf("planned from a corrupt view: %+v; applied: %v", rep.Items, col.calls)
	}
	t.Log(err)
	if rep != nil {
		t.Errorf("a report came with the error: %+v", rep)
	}
	if !errors.Is(err, thinmeta.ErrCorrupt) || !errdefs.IsDataLoss(err) {
		t.Errorf("err %v: want thinmeta.ErrCorrupt (data loss)", err)
	}
	for _, want := range []string{`pool "pool"`, "block 18", "checksum"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q does not say %q", err, want)
		}
	}
}
