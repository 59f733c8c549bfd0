package snapshotter

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// dm7Pool is the fake pool whose devices the kernel names dm-7; /sys of
// fakeKernel says dm-7 is fake-thin-3, another thin device of the same
// pool (our own next activation took the freed minor: the kernel hands
// out the lowest one).
type dm7Pool struct{ kernelNamedPool }

func (dm7Pool) KernelName(string) (string, error) { return "dm-7", nil }

// TestTemplateRefusedForItsOwnErrorOnAMinorOurPoolReused: the template's
// device (thin-4) was dm-7, noted before its deactivation; a snapshot's
// device (thin-3) of the same pool took dm-7 before the look read the
// kernel's report of a write lost on dm-7. The report is attributed to
// thin-3 (/sys wins when it names one of ours), and otherThinDevice
// takes it for another device's: the template is accepted.
func TestTemplateRefusedForItsOwnErrorOnAMinorOurPoolReused(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	s := kernelLogSnapshotter(t, dm7Pool{kernelNamedPool{newFakePool()}}, newTestStore(t))
	prepareKeys(t, s, "a", "b") // template thin-1, then thin-2 and thin-3
	s.format = func(context.Context, string, string) error {
		appendKernelLog(t, logPath, "3,2,20,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n")
		return nil
	}
	if _, err := s.makeTemplate(ctx, "ext4-other", "ext4", 32<<20); err == nil {
		t.Fatal("template accepted although the kernel logged a write lost on dm-7, its own device when noted")
	}
}

// TestForgottenNameOfAPendingRecordSurvivesARestart: a record about our
// dm-9 is read but not on record yet (the look recording it failed); the
// watcher ticks twice, forgets dm-9 (another tool's device has the minor
// now) and writes the names without it. The daemon restarts: it reads
// the record again (the position was not written) and must still count
// it, or the Commit retried after the restart is accepted.
func TestForgottenNameOfAPendingRecordSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	pool := dm9Pool{kernelNamedPool{newFakePool()}}
	s := kernelLogSnapshotter(t, pool, store)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	rec := snapshotRecord(t, store, "a")
	s.noteDevice(ctx, s.deviceName(rec.DeviceID)) // what Commit does before it deactivates
	appendKernelLog(t, logPath, "3,2,20,-;Buffer I/O error on dev dm-9, logical block 5, lost async page write\n")
	k := &s.klog
	k.mu.Lock()
	if err := s.drainKernelLog(ctx, 0); err != nil || k.pendingReason == "" {
		t.Fatalf("drain: %v, pending %q", err, k.pendingReason)
	}
	for range 2 { // two watcher ticks whose looks fail to record
		s.notePoolDevices()
		s.writeKernelLogMark(ctx, false)
	}
	k.mu.Unlock()
	s.Close()

	s2 := kernelLogSnapshotter(t, pool, store)
	err := s2.Commit(ctx, "base", "a")
	wantRefused(t, s2, err, "a", "I/O error on dm-9")
}

// TestCommitKeepsItsDeviceWhenItsNameCannotBeNoted: the kernel name of
// the device could not be noted (here: the names kept are at their bound
// while records are pending). Deactivated, the device's records could go
// unattributed after a restart: the Commit fails and leaves the device
// active and the snapshot as it was, to be committed again.
func TestCommitKeepsItsDeviceWhenItsNameCannotBeNoted(t *testing.T) {
	ctx := context.Background()
	fakeKernel(t, "6,1,10,-;nothing\n")
	fp := newFakePool()
	s := kernelLogSnapshotter(t, dm8Pool{kernelNamedPool{fp}}, newTestStore(t))
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	k := &s.klog
	k.mu.Lock()
	clear(k.known)
	for i := range maxKnownNames {
		k.known[fmt.Sprintf("dm-%d", 100+i)] = []string{"fake-thin-999"}
	}
	k.mu.Unlock()
	err := s.Commit(ctx, "base", "a")
	if err == nil || !strings.Contains(err.Error(), "kernel log watch") {
		t.Fatalf("commit with its kernel name not noted: %v, want a refusal naming the kernel log watch", err)
	}
	rec := snapshotRecord(t, s.store, "a")
	fp.mu.Lock()
	_, active := fp.active[s.deviceName(rec.DeviceID)]
	fp.mu.Unlock()
	if !active {
		t.Errorf("the device was deactivated although its kernel name is not on record (active: %v)", fp.active)
	}
	if _, err := s.Stat(ctx, "a"); err != nil {
		t.Errorf("the active snapshot is gone after the failed commit: %v", err)
	}
}
