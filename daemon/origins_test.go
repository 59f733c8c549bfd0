package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The periodic origin sweep never runs beside a gc or delete-image (it
// used to run without gcMu), and returns once its context ends.
func TestOriginSweepTakesTheGCLock(t *testing.T) {
	b := &backend{}
	var sweeps, overlaps atomic.Int32
	sweep := func(context.Context) {
		if b.gcMu.TryLock() {
			overlaps.Add(1) // the sweep is not holding gcMu
			b.gcMu.Unlock()
		}
		sweeps.Add(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.gcMu.Lock() // a gc running
	done := make(chan struct{})
	go func() { defer close(done); b.sweepOriginsEvery(ctx, 5*time.Millisecond, sweep) }()
	time.Sleep(50 * time.Millisecond)
	if n := sweeps.Load(); n != 0 {
		t.Fatalf("%d sweeps ran while gcMu was held", n)
	}
	b.gcMu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for sweeps.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if sweeps.Load() == 0 || overlaps.Load() != 0 {
		t.Errorf("%d sweeps, %d of them without gcMu", sweeps.Load(), overlaps.Load())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep loop did not return after its context ended")
	}
}
