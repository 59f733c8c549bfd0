package lazy

import (
	"context"
	"sync"
	"time"
)

// gate gives reads priority over the background prefetch. A read that
// finds a chunk missing holds the gate (enter, leave) while it waits for
// its fetch, and every read marks the gate (touch); a prefetch worker
// passes the gate (wait) before it starts another chunk, which it may
// only when no read waits and none came for quiet. Reads still share a chunk the prefetch already has in flight
// (cache.ensure), but no new prefetch fetch competes with them for the
// store, the fetch slots or the CPU that decompresses and verifies
// chunks: on a slow CPU the prefetch's verification of chunks nobody
// asked for was what a starting container waited behind. quiet spans
// the pauses between the reads of a burst (a mount, then an exec), so
// the prefetch does not slip in between them (in the test VM they were
// up to about 5 s apart, and 2 s let it in); the gate starts closed
// for quiet too, since the first reads come a moment after the attach.
// Measured in the test VM (docs/benchmarks.md): a container's start
// read only chunks the in-order prefetch had already fetched, and still
// took 3.5× as long as on a full base, because the prefetch's fetches
// held both emulated CPUs.
//
// Only a waiting read holds the prefetch for good; reads that keep
// coming from the cache hold it at most maxHold at a time, so that a
// steady trickle of reads does not keep the cache from ever completing.
type gate struct {
	quiet, maxHold time.Duration

	mu      sync.Mutex
	waiting int           // reads waiting for a chunk
	last    time.Time     // when a read last came or stopped waiting (or the gate was made)
	idle    chan struct{} // closed when waiting drops to 0
}

func newGate(quiet time.Duration) *gate {
	return &gate{quiet: quiet, maxHold: max(30*time.Second, quiet), last: time.Now(), idle: make(chan struct{})}
}

// touch records a read.
func (g *gate) touch() {
	g.mu.Lock()
	g.last = time.Now()
	g.mu.Unlock()
}

func (g *gate) enter() {
	g.mu.Lock()
	g.waiting++
	g.mu.Unlock()
}

func (g *gate) leave() {
	g.mu.Lock()
	g.waiting--
	g.last = time.Now()
	if g.waiting == 0 {
		close(g.idle)
		g.idle = make(chan struct{})
	}
	g.mu.Unlock()
}

// wait returns once the prefetch may start a chunk, or ctx's error.
func (g *gate) wait(ctx context.Context) error {
	held := time.Now()
	for {
		g.mu.Lock()
		waiting, idle, left := g.waiting, g.idle, g.quiet-time.Since(g.last)
		g.mu.Unlock()
		left = min(left, g.maxHold-time.Since(held))
		switch {
		case waiting > 0:
			select {
			case <-idle:
			case <-ctx.Done():
				return ctx.Err()
			}
		case left > 0:
			t := time.NewTimer(left)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		default:
			return nil
		}
	}
}
