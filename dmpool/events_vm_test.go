package dmpool

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPoolEventsOnDMThin: a pool that runs out of data space switches to
// out_of_data_space mode, moves its event counter, and wakes an
// EventWaiter; Close ends a Wait in progress. This is what the
// snapshotter's lost-writes watch rests on.
func TestPoolEventsOnDMThin(t *testing.T) {
	ctx := context.Background()
	p, _ := newTestPool(t, 16*mib)
	w, err := NewEventWaiter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	if !w.Pollable() {
		t.Fatal("the kernel's control device is not pollable (DM_DEV_ARM_POLL)")
	}
	before, err := p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Trouble() != "" || !before.ErrorIfNoSpace {
		t.Fatalf("fresh pool: trouble %q, error_if_no_space %v", before.Trouble(), before.ErrorIfNoSpace)
	}
	if err := p.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	name := p.cfg.Name + "-ev-1"
	dev, err := p.Activate(ctx, name, 1, 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Deactivate(ctx, name)

	// Drain the wakes of the activation, then wait for the pool's.
	for {
		woken, err := w.Wait(0)
		if err != nil {
			t.Fatal(err)
		}
		if !woken {
			break
		}
	}
	type result struct {
		woken bool
		err   error
	}
	waited := make(chan result, 1)
	go func() {
		// Long enough never to end by itself in this test.
		woken, err := w.Wait(time.Hour)
		waited <- result{woken, err}
	}()
	// Write past the pool's 16MiB with O_DIRECT: the writes beyond it
	// fail with EIO (error_if_no_space), the pool changes mode.
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuf(t, 1*mib)
	var werr error
	for off := int64(0); off < 64*mib && werr == nil; off += mib {
		_, werr = f.WriteAt(buf, off)
	}
	f.Close()
	if !errors.Is(werr, unix.EIO) && !errors.Is(werr, unix.ENOSPC) {
		t.Fatalf("writing past the pool's space: %v, want EIO", werr)
	}
	r := <-waited
	if r.err != nil || !r.woken {
		t.Fatalf("Wait after the pool ran out of space = %v, %v; want woken", r.woken, r.err)
	}
	after, err := p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("event counter %d -> %d, trouble %q", before.EventNr, after.EventNr, after.Trouble())
	if after.EventNr == before.EventNr || after.Trouble() != "out of data space" {
		t.Fatalf("after the pool ran out of space: event counter %d (was %d), trouble %q; want it moved and out of data space",
			after.EventNr, before.EventNr, after.Trouble())
	}

	// The pool may raise more than one event as it fills (the counter
	// moved by 2 on one run: the low-water mark, then the mode), so a Wait
	// started now can be woken by one raised before it: wait again until
	// Close ends it, as the snapshotter's watcher does.
	go func() {
		for i := 0; ; i++ {
			woken, err := w.Wait(time.Hour)
			if err != nil || !woken || i == 100 {
				waited <- result{woken, err}
				return
			}
		}
	}()
	w.Close()
	if r := <-waited; !errors.Is(r.err, ErrWaiterClosed) {
		t.Fatalf("Wait across Close = %v, %v; want ErrWaiterClosed", r.woken, r.err)
	}
}

// TestReloadEventsAreRecordedOnDMThin: Open's zero_new_blocks reload of an
// active pool reports the event counter around it when the reload moved
// it, so that the snapshotter does not take it for trouble.
func TestReloadEventsAreRecordedOnDMThin(t *testing.T) {
	ctx := context.Background()
	p, cfg := newTestPoolWith(t, 16*mib, func(c *Config) { c.SkipBlockZeroing = true })
	before, err := p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SkipBlockZeroing = false
	p2, res, err := Open(ctx, cfg)
	if err != nil || res != Found {
		t.Fatalf("reopen with zeroing: %s, %v", res, err)
	}
	after, err := p2.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := p2.OpenReload()
	t.Logf("reload: event counter %d -> %d, recorded %+v", before.EventNr, after.EventNr, r)
	switch {
	case after.EventNr == before.EventNr && r != nil:
		t.Fatalf("reload moved no event but recorded %+v", r)
	case after.EventNr != before.EventNr && (r == nil || r.Before != before.EventNr || r.After != after.EventNr):
		t.Fatalf("reload moved the counter %d -> %d but recorded %+v", before.EventNr, after.EventNr, r)
	}
	if after.Trouble() != "" {
		t.Fatalf("pool after the reload: %q", after.Trouble())
	}
}
