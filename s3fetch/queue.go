package s3fetch

import (
	"context"
	"sync/atomic"
)

// Queue bounds how many downloads run at once across a Client. Callers over
// the limit wait in line (in no guaranteed order) until a slot frees or their
// context ends; work is never dropped.
type Queue struct {
	slots   chan struct{}
	waiting atomic.Int64
}

// QueueStats is a snapshot for status reporting.
type QueueStats struct {
	Capacity int `json:"capacity"`
	Active   int `json:"active"`
	Waiting  int `json:"waiting"`
}

// NewQueue returns a queue admitting size concurrent holders.
func NewQueue(size int) *Queue {
	if size < 1 {
		size = 1
	}
	return &Queue{slots: make(chan struct{}, size)}
}

// Acquire waits for a slot. The returned release must be called exactly once;
// extra calls are ignored so that Close paths can be simple.
func (q *Queue) Acquire(ctx context.Context) (release func(), err error) {
	select {
	case q.slots <- struct{}{}:
	default:
		q.waiting.Add(1)
		select {
		case q.slots <- struct{}{}:
			q.waiting.Add(-1)
		case <-ctx.Done():
			q.waiting.Add(-1)
			return nil, context.Cause(ctx)
		}
	}
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			<-q.slots
		}
	}, nil
}

// Stats reports capacity, slots in use and callers waiting.
func (q *Queue) Stats() QueueStats {
	return QueueStats{Capacity: cap(q.slots), Active: len(q.slots), Waiting: int(q.waiting.Load())}
}
