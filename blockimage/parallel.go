package blockimage

import (
	"context"
	"sync"
)

// forEach runs fn for i in [0, n) on at most par workers. worker is the
// number (0..par-1) of the goroutine running fn, so that callers can give
// each worker its own buffers. The first error cancels the context the
// others run under and is returned.
func forEach(ctx context.Context, n, par int, fn func(ctx context.Context, worker, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	next := make(chan int)
	for w := range max(1, min(par, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				// The feeder may still hand out work after a failure
				// (select picks at random): none starts once cancelled.
				if ctx.Err() != nil {
					continue
				}
				if err := fn(ctx, w, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
