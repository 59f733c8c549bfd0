package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/kmsg"
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
	rec := snapshotRecord(t, store, "a")
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

// TestFirstStartInABootDoesNotJudgeTheBacklog: after a reboot the ring
// holds records of devices of earlier in the boot (another pool's, a
// test's), and one of ours may have their minor now: dm-7 is the pool's
// thin-3 at this start. None of those records can be about a write of
// ours (our devices come up with the daemon), so a snapshot prepared
// before the reboot still commits.
func TestFirstStartInABootDoesNotJudgeTheBacklog(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	pool := kernelNamedPool{newFakePool()}
	s := kernelLogSnapshotter(t, pool, store)
	prepareKeys(t, s, "a", "b") // b is thin-3, dm-7 now
	s.Close()
	// The reboot: the mark and the trouble record are of another boot.
	if err := store.Update(func(tx *metadata.Tx) error {
		pt, err := tx.PoolTrouble()
		if err != nil {
			return err
		}
		pt.KernelBoot = "the boot before"
		if err := tx.PutPoolTrouble(pt); err != nil {
			return err
		}
		return tx.PutKernelLogMark(metadata.KernelLogMark{Boot: "the boot before", ReadSeq: 1, Read: true})
	}); err != nil {
		t.Fatal(err)
	}
	appendKernelLog(t, logPath, "3,2,20,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n")

	s2 := kernelLogSnapshotter(t, pool, store)
	if err := s2.Commit(ctx, "base", "b"); err != nil {
		t.Fatalf("commit after the reboot refused for a record logged before the daemon's first start: %v", err)
	}
	// A record logged after the start is judged.
	appendKernelLog(t, logPath, "3,3,30,-;Buffer I/O error on dev dm-7, logical block 6, lost async page write\n")
	err := s2.Commit(ctx, "base-a", "a")
	wantRefused(t, s2, err, "a", "I/O error on dm-7")
}

// TestDismissedErrorRecordMovesThePositionAtOnce: an I/O error record
// of another's device is set aside; the position on record passes it at
// the next tick, not markEvery later, so that a restart soon after does
// not judge it again against the device holding its minor then.
func TestDismissedErrorRecordMovesThePositionAtOnce(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, store)
	k := &s.klog
	k.mu.Lock()
	defer k.mu.Unlock()
	s.kernelLogTick(ctx)
	appendKernelLog(t, logPath, "6,2,20,-;nothing\n")
	s.kernelLogTick(ctx) // within markEvery: the position stays
	appendKernelLog(t, logPath, "3,3,30,-;Buffer I/O error on dev dm-9, logical block 5, lost async page write\n")
	s.kernelLogTick(ctx)
	if m := kernelLogMark(t, store); !m.Read || m.ReadSeq != 3 {
		t.Errorf("position on record after a dismissed error record: %+v, want 3", m)
	}
}

// TestBacklogIsJudgedWhenThisBootHadAStart: a mark of this boot without
// a position (an earlier start could not record one, or wrote only the
// names) says this boot had a start: the records already in the ring may
// be about its writes, and are judged.
func TestBacklogIsJudgedWhenThisBootHadAStart(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	pool := kernelNamedPool{newFakePool()}
	s := kernelLogSnapshotter(t, pool, store)
	prepareKeys(t, s, "a", "b") // b is thin-3, dm-7
	boot := s.klog.boot
	s.Close()
	if err := store.Update(func(tx *metadata.Tx) error {
		return tx.PutKernelLogMark(metadata.KernelLogMark{Boot: boot})
	}); err != nil {
		t.Fatal(err)
	}
	appendKernelLog(t, logPath, "3,2,20,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n")
	s2 := kernelLogSnapshotter(t, pool, store)
	err := s2.Commit(ctx, "base", "b")
	wantRefused(t, s2, err, "b", "I/O error on dm-7")
}

// TestStartThatCannotReadTheLogRecordsTheBoot: a start whose kernel log
// cannot be opened still records that this boot had a start, so that a
// later start that can read the log judges what this one's devices did.
func TestStartThatCannotReadTheLogRecordsTheBoot(t *testing.T) {
	fakeKernel(t, "6,1,10,-;nothing\n")
	old := kernelLogPath
	kernelLogPath = filepath.Join(t.TempDir(), "no-kmsg")
	defer func() { kernelLogPath = old }()
	store := newTestStore(t)
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, store)
	if s.klog.open() {
		t.Fatal("the kernel log opened from a path that does not exist")
	}
	m := kernelLogMark(t, store)
	if boot, err := kmsg.BootID(); err != nil || m.Boot != boot || m.Read {
		t.Errorf("mark after a start without the log: %+v (boot %q, %v); want this boot, no position", m, boot, err)
	}
}
