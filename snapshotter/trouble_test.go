package snapshotter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// wantRefused fails t unless err is Commit's lost-writes refusal of key,
// with what in its message, and key is still a ready active snapshot.
func wantRefused(t *testing.T, s *Snapshotter, err error, key, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("commit of %q succeeded, want a refusal (%s)", key, what)
	}
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "may have been lost") ||
		!strings.Contains(err.Error(), `"`+key+`"`) || !strings.Contains(err.Error(), what) {
		t.Fatalf("commit of %q: %v, want FailedPrecondition naming it and %q", key, err, what)
	}
	info, err := s.Stat(context.Background(), key)
	if err != nil || info.Kind != snapshots.KindActive {
		t.Fatalf("after the refusal: Stat(%q) = %+v, %v; want it still active", key, info, err)
	}
}

// TestCommitRefusesAfterTransientOutOfSpace: the pool ran out of data
// space while the snapshot was written and got space back before Commit
// (another snapshot removed): only the events tell, and they must.
func TestCommitRefusesAfterTransientOutOfSpace(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	// out of data space, then back to write mode: two mode changes.
	pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
	wantRefused(t, s, s.Commit(ctx, "base", "a"), "a", "2 device-mapper events on the pool")
	checkConsistent(t, s, pool)
	// The trouble is on record; a snapshot prepared after it commits.
	if err := s.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "a2", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "a2"); err != nil {
		t.Fatalf("commit after the trouble was over: %v", err)
	}
	checkConsistent(t, s, pool)
}

// TestCommitRefusesPoolInTrouble: the pool is out of data space, read-only
// or failed when Commit looks, after the device is deactivated.
func TestCommitRefusesPoolInTrouble(t *testing.T) {
	for _, tc := range []struct {
		what string
		set  func(*dmpool.Status)
	}{
		{"out of data space", func(st *dmpool.Status) { st.OutOfDataSpace = true }},
		{"read-only", func(st *dmpool.Status) { st.ReadOnly = true }},
		{"failed", func(st *dmpool.Status) { st.Fail = true }},
		{"needs_check", func(st *dmpool.Status) { st.NeedsCheck = true }},
	} {
		t.Run(tc.what, func(t *testing.T) {
			ctx := context.Background()
			s, pool, _ := newTestSnapshotter(t)
			if _, err := s.Prepare(ctx, "a", ""); err != nil {
				t.Fatal(err)
			}
			// The mode changes as the last writeback fails, i.e. by the
			// time the device is deactivated; no event is needed.
			pool.hooks["deactivate"] = func() { pool.setStatus(tc.set) }
			wantRefused(t, s, s.Commit(ctx, "base", "a"), "a", tc.what)
			checkConsistent(t, s, pool)
		})
	}
}

// TestCommitRefusesTroubleWhileDown: the trouble came while the daemon was
// down between Prepare and Commit; the event counter on record tells.
func TestCommitRefusesTroubleWhileDown(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	pool := newFakePool()
	pool.status.EventNr = 7
	s, err := New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.format = func(context.Context, string, string) error { return nil }
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Out of data space and back while the daemon was down.
	pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
	s, err = New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantRefused(t, s, s.Commit(ctx, "base", "a"), "a", "2 device-mapper events on the pool (event counter 9, was 7)")
}

// reloadingPool is a fake pool whose Open reloaded the table and moved
// the event counter, as applyFeatures may.
type reloadingPool struct {
	*fakePool
	reload *dmpool.ReloadEvents
}

func (p reloadingPool) OpenReload() *dmpool.ReloadEvents { return p.reload }

// TestOwnReloadIsNotTrouble: the event of Open's zero_new_blocks reload is
// ours, and a snapshot prepared before the restart still commits; an
// event beyond it is trouble.
func TestOwnReloadIsNotTrouble(t *testing.T) {
	for _, tc := range []struct {
		name   string
		extra  uint32
		refuse bool
	}{{"reload only", 0, false}, {"reload and a low-water event", 1, false}, {"reload and two more events", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := newTestStore(t)
			fp := newFakePool()
			fp.status.EventNr = 3
			s, err := New(ctx, fp, store, Config{BaseSize: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			s.format = func(context.Context, string, string) error { return nil }
			if _, err := s.Prepare(ctx, "a", ""); err != nil {
				t.Fatal(err)
			}
			s.Close()
			fp.status.EventNr = 4 + tc.extra
			s, err = New(ctx, reloadingPool{fp, &dmpool.ReloadEvents{Before: 3, After: 4}}, store, Config{BaseSize: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.Commit(ctx, "base", "a")
			if tc.refuse {
				wantRefused(t, s, err, "a", "event counter 6, was 3")
			} else if err != nil {
				t.Fatalf("commit after our own reload: %v", err)
			}
		})
	}
}

// TestCommitRefusesWhenPoolUnreadable: if Commit cannot see the pool's
// mode it cannot vouch for the writes, and does not commit.
func TestCommitRefusesWhenPoolUnreadable(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	pool.fail["events"] = dmpool.ErrPoolMissing
	err := s.Commit(ctx, "base", "a")
	if !errors.Is(err, dmpool.ErrPoolMissing) || !strings.Contains(err.Error(), "cannot tell whether writes were lost") {
		t.Fatalf("commit = %v, want the pool error", err)
	}
	checkConsistent(t, s, pool)
}

// TestSpareTakesTroubleGeneration: a spare claimed after trouble commits;
// one claimed before does not.
func TestSpareTakesTroubleGeneration(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newSpareSnapshotter(t, 2)
	pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
	if _, err := s.Prepare(ctx, "after", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "c-after", "after"); err != nil {
		t.Fatalf("commit of a snapshot prepared after the trouble: %v", err)
	}
	if _, err := s.Prepare(ctx, "before", ""); err != nil {
		t.Fatal(err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
	wantRefused(t, s, s.Commit(ctx, "c-before", "before"), "before", "device-mapper events")
}

// fakeWaiter is an eventWaiter the test drives.
type fakeWaiter struct {
	events chan struct{}
	closed chan struct{}
	done   chan struct{}
}

func (w *fakeWaiter) Wait(time.Duration) (bool, error) {
	select {
	case <-w.events:
		return true, nil
	case <-w.closed:
		return false, dmpool.ErrWaiterClosed
	}
}
func (w *fakeWaiter) Close()   { close(w.closed) }
func (w *fakeWaiter) Release() { close(w.done) }

// TestWatcherRecordsTroubleAndStops: the watcher puts trouble on record
// with no Prepare or Commit looking, and Close ends it.
func TestWatcherRecordsTroubleAndStops(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	pool := newFakePool()
	w := &fakeWaiter{events: make(chan struct{}), closed: make(chan struct{}), done: make(chan struct{})}
	s, err := New(ctx, pool, store, Config{BaseSize: 64 << 20, newWaiter: func() (eventWaiter, error) { return w, nil }})
	if err != nil {
		t.Fatal(err)
	}
	looked := make(chan struct{})
	pool.setStatus(func(st *dmpool.Status) { st.OutOfDataSpace = true; st.EventNr++ })
	pool.mu.Lock()
	pool.hooks["events"] = func() { close(looked) }
	pool.mu.Unlock()
	w.events <- struct{}{}
	<-looked
	// The look that the hook announced may still be recording; the next
	// wake is taken only after it finished.
	w.events <- struct{}{}
	var pt metadata.PoolTrouble
	store.View(func(tx *metadata.Tx) (err error) { pt, err = tx.PoolTrouble(); return err })
	if pt.Generation != 1 || !strings.Contains(pt.Reason, "out of data space") {
		t.Fatalf("trouble on record = %+v, want generation 1 for out of data space", pt)
	}
	s.Close()
	select {
	case <-w.done:
	default:
		t.Fatal("Close returned with the watcher still running")
	}
}

// TestRefusalNamesTheFirstTrouble: out of data space, then back to write
// mode (another event): the refusal names what went wrong, not the
// recovery.
func TestRefusalNamesTheFirstTrouble(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.OutOfDataSpace = true; st.EventNr++ })
	if _, _, err := s.observeTrouble(ctx); err != nil {
		t.Fatal(err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.OutOfDataSpace = false; st.EventNr++ })
	err := s.Commit(ctx, "base", "a")
	wantRefused(t, s, err, "a", "(pool out of data space, at ")
	if !strings.Contains(err.Error(), "trouble generation 1, the snapshot's 0") {
		t.Fatalf("refusal %v does not give the generations", err)
	}
}

// TestLowWaterEventIsNotTrouble: one event with the pool healthy is a
// low-water mark crossed (dm-thin's default mark is 4GiB of blocks, so a
// small pool crosses it at its first allocation): the commit goes on.
func TestLowWaterEventIsNotTrouble(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.EventNr++ })
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatalf("commit after a low-water event: %v", err)
	}
	// The same single event with the pool out of space is trouble.
	if _, err := s.Prepare(ctx, "b", "base"); err != nil {
		t.Fatal(err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.EventNr++; st.OutOfDataSpace = true })
	wantRefused(t, s, s.Commit(ctx, "c", "b"), "b", "pool out of data space")
}

// TestSpareClaimedDuringTroubleIsNotCommitted: the claim's admission came
// before the pool ran out of space and the watcher's bump came before the
// claim's stamp, so the record carries the bumped generation; the pool
// recovers before the Commit (one quiet look). The claim saw the pool in
// trouble right after its stamp, so the Commit is refused.
func TestSpareClaimedDuringTroubleIsNotCommitted(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newSpareSnapshotter(t, 2)
	// The bump (out of data space) is on record before the claim.
	pool.setStatus(func(st *dmpool.Status) { st.OutOfDataSpace = true })
	if _, _, err := s.observeTrouble(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "during", ""); err != nil {
		t.Fatal(err)
	}
	// Space back, and the counter moved by the one event seen already
	// (the change into trouble was looked at; the way back is one event).
	pool.setStatus(func(st *dmpool.Status) { st.OutOfDataSpace = false })
	wantRefused(t, s, s.Commit(ctx, "c-during", "during"), "during", "out of data space")
}

// TestCommitAfterPoolDeviceRecreated: a reboot (or check_on_start) makes
// the pool device again and its event counter starts over below the one
// on record. That is not trouble: a snapshot prepared before it commits
// (TestStress found every such Commit refused).
func TestCommitAfterPoolDeviceRecreated(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	pool.setStatus(func(st *dmpool.Status) { st.EventNr = 5 })
	if _, _, err := s.observeTrouble(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	pool.setStatus(func(st *dmpool.Status) { st.EventNr = 0 })
	if err := s.Commit(ctx, "c", "a"); err != nil {
		t.Fatalf("commit after the pool device was made again: %v", err)
	}
}

// checkedPool is the fake pool whose Open found it in trouble and made it
// again (dmpool's check_on_start).
type checkedPool struct {
	*fakePool
	state string
}

func (p checkedPool) CheckedOnStart() string { return p.state }

// TestTroubleFoundByTheStartUpCheckRefusesCommit: the start-up check
// found the pool read-only with needs_check and made it again, healthy,
// with a fresh event counter: neither shows the trouble any more, so the
// start records it, and a snapshot prepared before is not committed.
func TestTroubleFoundByTheStartUpCheckRefusesCommit(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	fp := newFakePool()
	s, err := New(ctx, fp, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.format = func(context.Context, string, string) error { return nil }
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = New(ctx, checkedPool{fakePool: fp, state: "read-only with needs_check"}, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	wantRefused(t, s, s.Commit(ctx, "c", "a"), "a", "needs_check")
}

// TestRefusalAdviceByCause: the refusal says what to do about the trouble
// it names: free or extend for space, fix the device and check for a
// read-only, failed or needs_check pool, the kernel log for unexplained
// events, the metadata device for metadata space; "free space" is not
// the answer to a read-only pool.
func TestRefusalAdviceByCause(t *testing.T) {
	for _, tc := range []struct {
		what     string
		set      func(*dmpool.Status)
		want     []string
		wantNot  string
		inReason string
	}{
		{"out of data space", func(st *dmpool.Status) { st.OutOfDataSpace = true }, []string{"Free space in the pool or extend it"}, "check_on_start", "out of data space"},
		{"read-only", func(st *dmpool.Status) { st.ReadOnly = true }, []string{"write error on its data device", "check_on_start", "needs_check"}, "Free space", "read-only"},
		{"needs_check", func(st *dmpool.Status) { st.NeedsCheck = true }, []string{"write error on its data device", "check_on_start"}, "Free space", "needs_check"},
		{"failed", func(st *dmpool.Status) { st.Fail = true }, []string{"has failed", "metadata device"}, "Free space", "failed"},
		{"out of metadata space", func(st *dmpool.Status) { st.ReadOnly, st.UsedMetaBlocks, st.TotalMetaBlocks = true, 16, 16 },
			[]string{"out of metadata space", "extend its metadata device"}, "Free space in the pool or extend it", "read-only, out of metadata space"},
		{"unexplained events", func(st *dmpool.Status) { st.EventNr += 2 }, []string{"kernel log", "dmesg"}, "check_on_start", "device-mapper events"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			ctx := context.Background()
			s, pool, _ := newTestSnapshotter(t)
			const key = "default/3/extract-123 sha256:abc"
			if _, err := s.Prepare(ctx, key, ""); err != nil {
				t.Fatal(err)
			}
			pool.hooks["deactivate"] = func() { pool.setStatus(tc.set) }
			err := s.Commit(ctx, "default/4/sha256:abc", key)
			wantRefused(t, s, err, key, tc.inReason)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), tc.wantNot) {
				t.Errorf("refusal says %q, wrong for %s:\n%v", tc.wantNot, tc.what, err)
			}
		})
	}
}

// TestRefusalAdviceAfterStartUpCheck: trouble the start-up check found and
// repaired is not met with "free space".
func TestRefusalAdviceAfterStartUpCheck(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	fp := newFakePool()
	s, err := New(ctx, fp, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.format = func(context.Context, string, string) error { return nil }
	const key = "default/3/extract-1 sha256:abc"
	if _, err := s.Prepare(ctx, key, ""); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = New(ctx, checkedPool{fakePool: fp, state: "read-only with needs_check"}, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	err = s.Commit(ctx, "c", key)
	wantRefused(t, s, err, key, "needs_check")
	if !strings.Contains(err.Error(), "start-up check") || strings.Contains(err.Error(), "Free space") {
		t.Errorf("refusal after the start-up check's repair:\n%v", err)
	}
}

// TestRefusalAdviceBySnapshot: an unpack is retried by a pull, an import
// by process-image; a container's writable layer cannot be, and the
// refusal says its writes may be lost and what the operator can do.
func TestRefusalAdviceBySnapshot(t *testing.T) {
	for _, tc := range []struct {
		key     string
		want    []string
		wantNot string
	}{
		{"default/3/extract-123456789-abcd sha256:abc", []string{"retry the pull"}, "accept-lost-writes"},
		{"flyio-import-r1", []string{"run process-image again"}, "accept-lost-writes"},
		{"default/5/my-container", []string{"no retry can write its data again", "its writes may be lost",
			"copy what you need out of it", `snapshots accept-lost-writes --key "default/5/my-container" --generation`}, "retry the pull"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			ctx := context.Background()
			s, pool, _ := newTestSnapshotter(t)
			if _, err := s.Prepare(ctx, tc.key, ""); err != nil {
				t.Fatal(err)
			}
			pool.setStatus(func(st *dmpool.Status) { st.EventNr += 2 })
			err := s.Commit(ctx, "default/9/committed", tc.key)
			wantRefused(t, s, err, tc.key, "device-mapper events")
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), tc.wantNot) {
				t.Errorf("refusal says %q:\n%v", tc.wantNot, err)
			}
		})
	}
}

// TestTemplateWrittenDuringTroubleIsMadeAgain: every snapshot shares the
// template's blocks, so a template whose mkfs writes may have been lost
// (the pool ran out of space as they were written back) is not kept; the
// next Prepare makes a new one.
func TestTemplateWrittenDuringTroubleIsMadeAgain(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := newTestSnapshotter(t)
	pool.hooks["deactivate"] = func() { pool.setStatus(func(st *dmpool.Status) { st.OutOfDataSpace = true }) }
	_, err := s.Prepare(ctx, "a", "")
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "template") {
		t.Fatalf("Prepare on a template written while the pool ran out of space: %v; want unavailable, naming the template", err)
	}
	delete(pool.hooks, "deactivate")
	pool.setStatus(func(st *dmpool.Status) { st.OutOfDataSpace = false })
	if _, err := s.Prepare(ctx, "b", ""); err != nil {
		t.Fatalf("Prepare once the pool is back: %v", err)
	}
	if err := s.Commit(ctx, "base", "b"); err != nil {
		t.Fatalf("a snapshot of the new template: %v", err)
	}
}

// TestTemplateJudgedByTroubleThatCanHaveHitIt: a kernel I/O error named
// on another thin device does not make a template be made again; one on
// its own device, the pool's devices, a mode change or lost records do.
func TestTemplateJudgedByTroubleThatCanHaveHitIt(t *testing.T) {
	for reason, other := range map[string]bool{
		`the kernel logged an I/O error on dm-9 (p-thin-12): "Buffer I/O error on dev dm-9, ..."`:                 true,
		`the kernel logged an I/O error on dm-3 (p-thin-1): "Buffer I/O error on dev dm-3, ..."`:                  false, // the template's own
		`the kernel logged an I/O error on loop5: "I/O error, dev loop5, ..."`:                                    false,
		`the kernel logged an I/O error (maybe: kernel log records were overwritten before the daemon read them)`: false,
		`pool out of data space; the kernel logged an I/O error on dm-9 (p-thin-12): "..."`:                       false,
		`pool out of data space`: false,
	} {
		if got := otherThinDevice(reason, "p", "p-thin-1"); got != other {
			t.Errorf("%s: other thin device %v, want %v", reason, got, other)
		}
	}
}
