package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/metadata"
)

// kernelNamedPool is the fake pool with kernel names for its devices, as
// *dmpool.Pool has.
type kernelNamedPool struct{ *fakePool }

func (kernelNamedPool) BlockDevices() ([]string, error) {
	return []string{"dm-1", "loop5", "loop6"}, nil
}
func (kernelNamedPool) KernelName(string) (string, error) { return "", nil }

// fakeKernel points the kernel log at a file of records and /sys/block at
// a directory where dm-7 is thin device 3 of the fake pool and dm-9
// someone else's.
func fakeKernel(t *testing.T, records string) (logPath string) {
	t.Helper()
	dir := t.TempDir()
	for dev, name := range map[string]string{"dm-7": "fake-thin-3", "dm-9": "other-thin-3"} {
		if err := os.MkdirAll(filepath.Join(dir, "sys", dev, "dm"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sys", dev, "dm", "name"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logPath = filepath.Join(dir, "kmsg")
	if err := os.WriteFile(logPath, []byte(records), 0o600); err != nil {
		t.Fatal(err)
	}
	oldLog, oldSys := kernelLogPath, sysBlock
	kernelLogPath, sysBlock = logPath, filepath.Join(dir, "sys")
	t.Cleanup(func() { kernelLogPath, sysBlock = oldLog, oldSys })
	return logPath
}

// kernelLogSnapshotter opens a snapshotter over pool and store, with
// mkfs skipped, closed at the test's end.
func kernelLogSnapshotter(t *testing.T, pool Pool, store *metadata.Store) *Snapshotter {
	t.Helper()
	s, err := New(context.Background(), pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.format = func(context.Context, string, string) error { return nil }
	return s
}

// prepareAndCommit prepares key and commits it as name.
func prepareAndCommit(t *testing.T, s *Snapshotter, key, name string) error {
	t.Helper()
	if _, err := s.Prepare(context.Background(), key, ""); err != nil {
		t.Fatal(err)
	}
	return s.Commit(context.Background(), name, key)
}

// TestCommitRefusesAfterAKernelIOError is issue 10 B5's "an error seen on
// the device": a write to one of the pool's devices failed without any
// change of the pool's mode (a failing data disk, a thin device's own
// error), and only the kernel's log says so. Commit refuses a snapshot
// prepared before, naming the record; a restart does not count the same
// record again; records about other devices, or without an error, are
// not trouble.
func TestCommitRefusesAfterAKernelIOError(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;EXT4-fs (dm-7): mounted filesystem\n"+
		"3,2,20,-;Buffer I/O error on dev dm-9, logical block 5, lost async page write\n")
	store := newTestStore(t)
	pool := kernelNamedPool{newFakePool()}
	s, err := New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.format = func(context.Context, string, string) error { return nil }
	prepareKeys(t, s, "a", "b")
	if err := s.Commit(ctx, "base-a", "a"); err != nil {
		t.Fatalf("commit with no error of ours in the kernel log: %v", err)
	}
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("3,3,30,-;Buffer I/O error on dev dm-7, logical block 16384, lost async page write\n SUBSYSTEM=block\n")
	f.Close()
	err = s.Commit(ctx, "base-b", "b")
	wantRefused(t, s, err, "b", "I/O error on dm-7 (fake-thin-3)")
	if !strings.Contains(err.Error(), "failing disk") || strings.Contains(err.Error(), "Free space") {
		t.Errorf("the refusal's advice is not about a write error on a device:\n%v", err)
	}
	s.Close()

	// A restart reads the kernel log from its first record again.
	s = kernelLogSnapshotter(t, pool, store)
	if err := prepareAndCommit(t, s, "c", "base-c"); err != nil {
		t.Fatalf("commit after a restart re-read an old kernel error: %v", err)
	}
}

func TestKernelErrorTexts(t *testing.T) {
	k := &kernelLog{known: map[string][]string{"dm-8": {"fake-thin-4"}, "dm-9": {"fake-thin-5"}}, fixed: map[string]bool{"loop5": true}}
	fakeKernel(t, "")
	const w = ", logical block 3, lost async page write"
	for msg, want := range map[string]string{
		"Buffer I/O error on dev dm-7" + w:                                                     "dm-7 (fake-thin-3)",
		"Buffer I/O error on dev dm-7, logical block 3, lost sync page write":                  "dm-7 (fake-thin-3)",
		"EXT4-fs warning (device dm-7): ext4_end_bio:343: I/O error 10 writing to inode 12":    "dm-7 (fake-thin-3)",
		"EXT4-fs (dm-7): I/O error while writing superblock":                                   "dm-7 (fake-thin-3)",
		"EXT4-fs (dm-7): previous I/O error to superblock detected":                            "dm-7 (fake-thin-3)",
		"JBD2: Error -5 detected when updating journal superblock for dm-7-8.":                 "dm-7 (fake-thin-3)",
		"JBD2: I/O error when updating journal superblock for dm-7-8.":                         "dm-7 (fake-thin-3)",
		"JBD2: Detected IO errors while flushing file data on dm-7-8":                          "dm-7 (fake-thin-3)",
		"Aborting journal on device dm-7-8.":                                                   "dm-7 (fake-thin-3)",
		"I/O error, dev loop5, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0": "loop5",
		"critical medium error, dev loop5, sector 2048 op 0x1:(WRITE) flags 0x0":               "loop5",
		"blk_update_request: I/O error, dev loop5, sector 2048 op 0x1:(WRITE) flags 0x0":       "loop5",
		"I/O error, dev loop5, sector 2048 op 0x2:(FLUSH) flags 0x0":                           "loop5",
		// Errors that lose no write.
		"I/O error, dev loop5, sector 2048 op 0x0:(READ) flags 0x0":                "",
		"critical target error, dev loop5, sector 2048 op 0x3:(DISCARD) flags 0x0": "",
		"Buffer I/O error on dev dm-7, logical block 3, async page read":           "",
		"I/O error, dev loop50, sector 2048 op 0x1:(WRITE)":                        "",
		"Buffer I/O error on dev dm-70" + w:                                        "",
		"EXT4-fs (dm-7): mounted filesystem with ordered data mode":                "",
		"Buffer I/O error on dev dm-8" + w:                                         "dm-8 (fake-thin-4)",
		// dm-9 was ours (noted at a Commit) and is someone else's now:
		// the record may be about our device, logged before the minor
		// was reused and read after; it counts until the watcher
		// forgets the name (TestReusedMinorIsForgottenAtTheNextTick).
		"Buffer I/O error on dev dm-9" + w: "dm-9 (fake-thin-5)",
		// Text a user controls is never the start of a record.
		"i/o error dm-7[123]: segfault at 0 ip 0 sp 0 error 4 in x[400000+1000]":              "",
		"Out of memory: Killed process 12 (Buffer I/O erro) total-vm:1kB, dev dm-7, sector 1": "",
	} {
		if got := strings.Join(k.ourDevices(errorDevice(msg), "fake"), ", "); got != want {
			t.Errorf("%q: %q, want %q", msg, got, want)
		}
	}
}

// TestKernelLogReadsOnlyTheKernelsRecords: a record a process wrote to
// /dev/kmsg (user facility) is not the kernel's report.
func TestKernelLogReadsOnlyTheKernelsRecords(t *testing.T) {
	fakeKernel(t, "14,1,10,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n")
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, newTestStore(t))
	if err := prepareAndCommit(t, s, "a", "base"); err != nil {
		t.Fatalf("a user-written record refused a commit: %v", err)
	}
}

// TestKernelErrorOnAnAbandonedDeviceIsNotTrouble: write-back errors on a
// device no record keeps (a fill mount a kill -9 left, torn down with its
// device at the next start) lose nothing of anyone's.
func TestKernelErrorOnAnAbandonedDeviceIsNotTrouble(t *testing.T) {
	// dm-7 is fake-thin-3, which this snapshotter never made.
	fakeKernel(t, "3,1,10,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n")
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, newTestStore(t))
	if err := prepareAndCommit(t, s, "a", "base"); err != nil {
		t.Fatalf("an error on a device with no record refused a commit: %v", err)
	}
}

// TestCommitAfterCloseCannotVouchForWrites: a Commit still running after
// Close (the daemon's drain gave up on it) no longer reads the kernel log:
// it is refused this once, and nothing is recorded as trouble (a restart
// would otherwise refuse every snapshot prepared before it).
func TestCommitAfterCloseCannotVouchForWrites(t *testing.T) {
	ctx := context.Background()
	fakeKernel(t, "")
	store := newTestStore(t)
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, store)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	s.klog.close()
	err := s.Commit(ctx, "base", "a")
	if err == nil || !strings.Contains(err.Error(), "the kernel log could not be read") {
		t.Fatalf("Commit after the kernel log closed: %v; want a refusal saying it could not be read", err)
	}
	if info, err := s.Stat(ctx, "a"); err != nil || info.Kind != snapshots.KindActive {
		t.Errorf("the refused snapshot: %+v, %v; want it still active", info, err)
	}
	var pt metadata.PoolTrouble
	store.View(func(tx *metadata.Tx) (err error) { pt, err = tx.PoolTrouble(); return err })
	if pt.Generation != 0 {
		t.Errorf("a closed kernel log was recorded as trouble: %+v", pt)
	}
}

// TestKernelSeqOnRecordNeverGoesBack: a bump for
// records overwritten before they were read has no record of its own;
// the position on record stays, so a restart does not count again what
// was counted.
func TestKernelSeqOnRecordNeverGoesBack(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, store)
	prepareKeys(t, s, "a", "b") // thin-2 and thin-3 (dm-7)
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("3,2,20,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n")
	f.Close()
	if _, _, err := s.observeTrouble(ctx); err != nil {
		t.Fatal(err)
	}
	s.klog.mu.Lock()
	s.klog.pendingLost = true // as after an EPIPE
	s.klog.mu.Unlock()
	if _, _, err := s.observeTrouble(ctx); err != nil {
		t.Fatal(err)
	}
	var pt metadata.PoolTrouble
	store.View(func(tx *metadata.Tx) (err error) { pt, err = tx.PoolTrouble(); return err })
	if pt.KernelSeq != 2 {
		t.Errorf("kernel log position on record %d after a bump for lost records, want 2 (the last record counted): %+v", pt.KernelSeq, pt)
	}
}

// prepareKeys prepares parentless active snapshots keys, in order.
func prepareKeys(t *testing.T, s *Snapshotter, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, err := s.Prepare(context.Background(), k, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotRecord reads snapshot key's record.
func snapshotRecord(t *testing.T, store *metadata.Store, key string) *metadata.Snapshot {
	t.Helper()
	var rec *metadata.Snapshot
	if err := store.View(func(tx *metadata.Tx) (err error) { rec, err = tx.Snapshot(key); return err }); err != nil {
		t.Fatal(err)
	}
	return rec
}
