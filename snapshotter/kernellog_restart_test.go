package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/superfly/flyio-image-manager/metadata"
)

// TestRestartDoesNotRejudgeARecordAlreadyDismissed: a record on dm-5,
// whose device was none of ours (or an abandoned one, forgotten since),
// is read and dismissed, and the position after it is on record. Our
// snapshot "a" is prepared after it; at a restart in the same boot dm-5
// is a's device (reactivated onto the free minor). The restart reads
// the ring again from its start and attributes the old record to a.
func TestRestartDoesNotRejudgeARecordAlreadyDismissed(t *testing.T) {
	ctx := context.Background()
	fakeKernel(t, "3,1,10,-;Buffer I/O error on dev dm-5, logical block 5, lost async page write\n")
	store := newTestStore(t)
	pool := kernelNamedPool{newFakePool()}
	s := kernelLogSnapshotter(t, pool, store)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	var rec *metadata.Snapshot
	if err := store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot("a"); return err }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var m metadata.KernelLogMark
	store.View(func(tx *metadata.Tx) (err error) { m, err = tx.KernelLogMark(); return err })
	t.Logf("mark %+v", m)
	dir := filepath.Join(sysBlock, "dm-5", "dm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "name"), []byte(s.deviceName(rec.DeviceID)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := kernelLogSnapshotter(t, pool, store)
	if err := s2.Commit(ctx, "base", "a"); err != nil {
		t.Fatalf("commit refused for a record logged before the snapshot existed: %v", err)
	}
}
