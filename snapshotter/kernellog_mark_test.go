package snapshotter

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/metadata"
)

// dm8Pool is the fake pool whose devices the kernel names dm-8, a name
// /sys of fakeKernel does not have: the device is gone when the log is
// read.
type dm8Pool struct{ kernelNamedPool }

func (dm8Pool) KernelName(string) (string, error) { return "dm-8", nil }

func kernelLogMark(t *testing.T, store *metadata.Store) metadata.KernelLogMark {
	t.Helper()
	var m metadata.KernelLogMark
	if err := store.View(func(tx *metadata.Tx) (err error) { m, err = tx.KernelLogMark(); return err }); err != nil {
		t.Fatal(err)
	}
	return m
}

func appendKernelLog(t *testing.T, path, records string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(records); err != nil {
		t.Fatal(err)
	}
}

// TestKernelNameOfAGoneDeviceIsOnRecord: a daemon killed after a Commit
// deactivated its device, and before it read the kernel's report of a
// write lost on it, reads the report at its next start, when dm-8 is gone
// from /sys. The record of the kernel names says whose it was; before,
// the report was taken for someone else's device and the snapshot was
// committed.
func TestKernelNameOfAGoneDeviceIsOnRecord(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	pool := dm8Pool{kernelNamedPool{newFakePool()}}
	s := kernelLogSnapshotter(t, pool, store)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	rec := snapshotRecord(t, store, "a")
	// What Commit does before it deactivates the device.
	s.noteDevice(ctx, s.deviceName(rec.DeviceID))
	if m := kernelLogMark(t, store); !slices.Contains(m.Names["dm-8"], s.deviceName(rec.DeviceID)) {
		t.Errorf("the kernel name is not on record before the device goes: %+v", m)
	}
	s.Close() // as killed: the watcher read nothing after this
	appendKernelLog(t, logPath, "3,2,20,-;Buffer I/O error on dev dm-8, logical block 5, lost async page write\n")

	s = kernelLogSnapshotter(t, pool, store)
	err := s.Commit(ctx, "base", "a")
	wantRefused(t, s, err, "a", "I/O error on dm-8 ("+s.deviceName(rec.DeviceID)+")")
}

// TestKernelLogMarkOfAnotherBootIsIgnored: names and positions of another
// boot say nothing of this one (minors and sequence numbers start again).
func TestKernelLogMarkOfAnotherBootIsIgnored(t *testing.T) {
	fakeKernel(t, "6,1,10,-;nothing\n3,2,20,-;Buffer I/O error on dev dm-8, logical block 5, lost async page write\n")
	store := newTestStore(t)
	old := metadata.KernelLogMark{Boot: "another boot", ReadSeq: 0, Read: true, Names: map[string][]string{"dm-8": {"fake-thin-2"}}}
	if err := store.Update(func(tx *metadata.Tx) error { return tx.PutKernelLogMark(old) }); err != nil {
		t.Fatal(err)
	}
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, store)
	if err := prepareAndCommit(t, s, "a", "base"); err != nil {
		t.Fatalf("a mark of another boot was used: %v", err)
	}
}

// TestKernelLogOverwrittenWhileDownIsTrouble: the kernel's ring of records
// wrapped while the daemon was not running (its first record is newer
// than the one read last): what was overwritten may have reported a write
// lost on the pool's devices, so a snapshot prepared before is not
// committed. A log that goes on from where it was read is no trouble.
func TestKernelLogOverwrittenWhileDownIsTrouble(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,5,10,-;one\n6,6,20,-;two\n")
	store := newTestStore(t)
	pool := kernelNamedPool{newFakePool()}
	s := kernelLogSnapshotter(t, pool, store)
	prepareKeys(t, s, "a", "b")
	s.Close()
	if m := kernelLogMark(t, store); !m.Read || m.ReadSeq != 6 {
		t.Errorf("read position on record after Close: %+v, want 6", m)
	}

	// The oldest record left is the one after the last read.
	if err := os.WriteFile(logPath, []byte("6,7,30,-;three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = kernelLogSnapshotter(t, pool, store)
	if err := s.Commit(ctx, "base-a", "a"); err != nil {
		t.Fatalf("commit after a restart with no record lost: %v", err)
	}
	s.Close()

	// Records 8 to 39 are gone.
	if err := os.WriteFile(logPath, []byte("6,40,90,-;forty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = kernelLogSnapshotter(t, pool, store)
	err := s.Commit(ctx, "base-b", "b")
	wantRefused(t, s, err, "b", "overwritten")
	if !strings.Contains(err.Error(), "kernel") {
		t.Errorf("the refusal does not say the kernel log: %v", err)
	}
}

// TestWatcherRecordsThePoolsKernelNames: the kernel names of the pool's
// devices are recorded by the watcher as they appear, whoever made them,
// not only by a Commit (a device made and deactivated by any other path,
// a fill or a template, is reported by its name too).
func TestWatcherRecordsThePoolsKernelNames(t *testing.T) {
	fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, store)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := kernelLogMark(t, store)
		if slices.Equal(m.Names["dm-7"], []string{"fake-thin-3"}) {
			if _, ok := m.Names["dm-9"]; ok {
				t.Fatalf("another pool's device recorded as ours: %+v", m)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dm-7 (fake-thin-3 in /sys) not recorded after 10 s: %+v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
