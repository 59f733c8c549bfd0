package snapshotter

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/metadata"
)

// TestTemplateRefusedForItsOwnErrorAfterAnother: one look reads a write
// lost on another thin device and then one lost on the template's own
// device (a failing data disk errors every active device's writes at
// once). The bump's reason names only the first record read, and the
// template is judged by that reason alone: it must still be refused.
func TestTemplateRefusedForItsOwnErrorAfterAnother(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	pool := dm8Pool{kernelNamedPool{newFakePool()}}
	s := kernelLogSnapshotter(t, pool, store)
	prepareKeys(t, s, "a", "b") // template thin-1, then thin-2 and thin-3 (dm-7)
	s.format = func(context.Context, string, string) error {
		appendKernelLog(t, logPath,
			"3,2,20,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n"+
				"3,3,21,-;Buffer I/O error on dev dm-8, logical block 9, lost async page write\n")
		return nil
	}
	// The template's device is thin-4, which the kernel names dm-8.
	if _, err := s.makeTemplate(ctx, "ext4-other", "ext4", 32<<20); err == nil {
		t.Fatal("template accepted although the kernel logged a write lost on its own device (dm-8)")
	}
}

// dm9Pool is the fake pool whose devices the kernel names dm-9; /sys of
// fakeKernel says dm-9 is another pool's device now (the minor reused).
type dm9Pool struct{ kernelNamedPool }

func (dm9Pool) KernelName(string) (string, error) { return "dm-9", nil }

// TestKernelErrorOnAMinorReusedSinceIsOurs: Commit noted that its device
// is dm-9 and deactivated it; before the look read the kernel's report of
// a write lost on dm-9, another tool's device took the minor. The report
// was about our snapshot's device: the Commit must be refused.
func TestKernelErrorOnAMinorReusedSinceIsOurs(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	s := kernelLogSnapshotter(t, dm9Pool{kernelNamedPool{newFakePool()}}, store)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	appendKernelLog(t, logPath, "3,2,20,-;Buffer I/O error on dev dm-9, logical block 5, lost async page write\n")
	err := s.Commit(ctx, "base", "a")
	wantRefused(t, s, err, "a", "I/O error on dm-9")
}

// TestKernelRecordReadWhileAnotherIsRecordedIsKept: the watcher reads a
// second error record between a look's scan and its recording; the
// look's recorded must not forget it.
func TestKernelRecordReadWhileAnotherIsRecordedIsKept(t *testing.T) {
	ctx := context.Background()
	logPath := fakeKernel(t, "6,1,10,-;nothing\n")
	store := newTestStore(t)
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, store)
	prepareKeys(t, s, "a", "b") // thin-3 is dm-7
	appendKernelLog(t, logPath, "3,2,20,-;Buffer I/O error on dev dm-7, logical block 5, lost async page write\n")
	reason, seq, gen, err := s.scanKernelLog(ctx, metadata.PoolTrouble{})
	if err != nil || reason == "" || seq != 2 {
		t.Fatalf("scan: %q %d %v", reason, seq, err)
	}
	// The watcher's tick, while the look's store.Update runs.
	appendKernelLog(t, logPath, "3,3,30,-;Buffer I/O error on dev dm-7, logical block 6, lost async page write\n")
	s.klog.mu.Lock()
	s.drainKernelLog(ctx, 0)
	s.klog.mu.Unlock()
	s.klog.recorded(gen) // the look's record (KernelSeq 2) is durable
	reason, seq, _, err = s.scanKernelLog(ctx, metadata.PoolTrouble{KernelBoot: s.klog.boot, KernelSeq: 2})
	if err != nil || seq != 3 {
		t.Errorf("record 3, read while record 2 was being recorded, is forgotten: %q %d %v", reason, seq, err)
	}
}

// TestReusedMinorIsForgottenAtTheNextTick: a minor noted as ours that
// /sys shows as another's device is still ours at the watcher's tick that
// sees the reuse (records logged before it may not be read yet), and
// forgotten at the next: another device's errors do not refuse our
// Commits for good.
func TestReusedMinorIsForgottenAtTheNextTick(t *testing.T) {
	ctx := context.Background()
	fakeKernel(t, "6,1,10,-;nothing\n")
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, newTestStore(t))
	k := &s.klog
	k.mu.Lock()
	defer k.mu.Unlock()
	k.know("dm-9", "fake-thin-5") // /sys: dm-9 is other-thin-3 now
	const rec = "Buffer I/O error on dev dm-9, logical block 3, lost async page write"
	for tick, want := range []string{"dm-9 (fake-thin-5)", "dm-9 (fake-thin-5)", ""} {
		if got := strings.Join(k.ourDevices(errorDevice(rec), "fake"), ", "); got != want {
			t.Errorf("after %d ticks: a record on dm-9 is %q, want %q", tick, got, want)
		}
		s.notePoolDevices()
		s.writeKernelLogMark(ctx, false)
	}
	if _, ok := k.mark.Names["dm-9"]; ok {
		t.Errorf("the forgotten name is still on record: %v", k.mark.Names)
	}
	if !slices.Equal(k.known["dm-7"], []string{"fake-thin-3"}) {
		t.Errorf("the pool's device dm-7 is not known: %v", k.known)
	}
}

// TestRecordOnAMinorOfTwoOfOursNamesBoth: dm-7 was thin-6 when noted and
// is thin-3 now; a record about dm-7 may be about either, so it names
// both, and a gone device's name is forgotten two ticks after it went,
// while nothing is pending, and not before.
func TestRecordOnAMinorOfTwoOfOursNamesBoth(t *testing.T) {
	fakeKernel(t, "6,1,10,-;nothing\n")
	s := kernelLogSnapshotter(t, kernelNamedPool{newFakePool()}, newTestStore(t))
	k := &s.klog
	k.mu.Lock()
	defer k.mu.Unlock()
	k.known = map[string][]string{"dm-7": {"fake-thin-6"}, "dm-12": {"fake-thin-9"}} // dm-12: gone
	const rec = "Buffer I/O error on dev dm-7, logical block 3, lost async page write"
	if got := strings.Join(k.ourDevices(errorDevice(rec), "fake"), ", "); got != "dm-7 (fake-thin-3), dm-7 (fake-thin-6)" {
		t.Errorf("a record on dm-7 is about %q, want both devices", got)
	}
	k.pendingReason = "pending"
	s.notePoolDevices()
	s.notePoolDevices()
	if len(k.known["dm-12"]) == 0 || len(k.known["dm-7"]) != 2 {
		t.Fatalf("names forgotten while a record is pending: %v", k.known)
	}
	k.pendingReason = ""
	s.notePoolDevices()
	if len(k.known["dm-12"]) == 0 {
		t.Fatalf("a gone device's name forgotten at the first tick that saw it gone: %v", k.known)
	}
	s.notePoolDevices()
	if _, ok := k.known["dm-12"]; ok || !slices.Equal(k.known["dm-7"], []string{"fake-thin-3"}) {
		t.Errorf("after two ticks: %v; want dm-12 forgotten and dm-7 only fake-thin-3", k.known)
	}
}
