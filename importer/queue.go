package importer

import (
	"context"
	"slices"
	"sync"
)

// fifo is the unpacks queue: it admits at most cap holders (run ids) at
// once and lets the others in strictly in the order they arrived, so an
// operator reading queue-status knows which run goes next. Unlike
// s3fetch.Queue it knows who holds and who waits, for Importer.Queues.
type fifo struct {
	mu      sync.Mutex
	cap     int
	active  []string  // holders, in the order they were admitted
	waiting []*waiter // in arrival order
}

type waiter struct {
	id    string
	ready chan struct{} // closed when admitted
}

func newFIFO(size int) *fifo {
	if size < 1 {
		size = 1
	}
	return &fifo{cap: size}
}

// Acquire waits until id is admitted or ctx ends. The returned release
// must be called once the holder is done; extra calls are ignored.
func (q *fifo) Acquire(ctx context.Context, id string) (release func(), err error) {
	q.mu.Lock()
	if len(q.active) < q.cap && len(q.waiting) == 0 {
		q.active = append(q.active, id)
		q.mu.Unlock()
		return q.releaser(id), nil
	}
	w := &waiter{id: id, ready: make(chan struct{})}
	q.waiting = append(q.waiting, w)
	q.mu.Unlock()

	select {
	case <-w.ready:
		return q.releaser(id), nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	select {
	case <-w.ready:
		// Admitted just as ctx ended: hand the slot on.
		q.mu.Unlock()
		q.releaser(id)()
		return nil, context.Cause(ctx)
	default:
	}
	q.waiting = slices.DeleteFunc(q.waiting, func(x *waiter) bool { return x == w })
	q.mu.Unlock()
	return nil, context.Cause(ctx)
}

func (q *fifo) releaser(id string) func() {
	var once sync.Once
	return func() { once.Do(func() { q.release(id) }) }
}

// release frees id's slot and admits the first waiter.
func (q *fifo) release(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := slices.Index(q.active, id); i >= 0 {
		q.active = slices.Delete(q.active, i, i+1)
	}
	for len(q.active) < q.cap && len(q.waiting) > 0 {
		w := q.waiting[0]
		q.waiting = q.waiting[1:]
		q.active = append(q.active, w.id)
		close(w.ready)
	}
}

// snapshot returns the capacity, the holders and the waiters in line.
func (q *fifo) snapshot() (capacity int, active, waiting []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	active = slices.Clone(q.active)
	for _, w := range q.waiting {
		waiting = append(waiting, w.id)
	}
	return q.cap, active, waiting
}
