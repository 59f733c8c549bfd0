package lazy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// prefetch fetches every missing chunk, in order, on Prefetch workers,
// each of which lets reads waiting for chunks go first (gate.go). A chunk that fails is left for the next pass (after run's backoff)
// while the others go on; the first failure is returned. Reads on demand
// share the fetches: a chunk either asks for is fetched once.
func (o *origin) prefetch(ctx context.Context) error {
	bm := o.files.bm
	var missing []int
	for i := range bm.n {
		if !bm.has(i) {
			missing = append(missing, i)
		}
	}
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		fails int
		mu    sync.Mutex
	)
	next := make(chan int)
	for range min(o.m.cfg.Prefetch, len(missing)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := o.cache.demand.wait(ctx); err != nil {
					return
				}
				if err := o.cache.ensure(ctx, i, true); err != nil {
					once.Do(func() { first = err })
					mu.Lock()
					fails++
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for _, i := range missing {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return fmt.Errorf("prefetch: %d of %d missing chunks failed, first: %w", fails, len(missing), first)
	}
	return ctx.Err()
}

// switchToFile moves a complete origin from its served device to a file
// device: the cache file is synced, a file device attached over it and
// made the origin's device (so that a table made from now on gets it),
// the caller reloads its tables onto it (OnSwitch), and only then is the
// served device closed. If OnSwitch fails the served device is the
// origin's again, and serves from the complete cache without the store;
// a table that got the file device meanwhile keeps it (a loop device
// stays while a table uses it).
func (o *origin) switchToFile(ctx context.Context) (bool, error) {
	o.swMu.Lock()
	defer o.swMu.Unlock()
	if err := o.files.cache.Sync(); err != nil {
		return false, fmt.Errorf("syncing the cache file: %w", err)
	}
	fd, err := o.attachFile(ctx)
	if err != nil {
		return false, err
	}
	o.mu.Lock()
	served := o.dev
	o.dev, o.served, o.switching = fd, false, true
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.switching = false
		o.mu.Unlock()
	}()
	if sw := o.m.cfg.OnSwitch; sw != nil {
		if err := sw(ctx, o.name, served.Path(), fd.Path()); err != nil {
			o.mu.Lock()
			dead := slices.Contains(o.lost, served)
			if !dead {
				o.dev, o.served = served, true
			}
			o.mu.Unlock()
			if dead {
				// The served device ended meanwhile: the file device
				// stays, and recoverLoop moves what is left on the dead
				// one onto it.
				return false, fmt.Errorf("switching to %s: %w", fd.Path(), err)
			}
			if cerr := fd.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("closing the file device: %w", cerr))
			}
			return false, fmt.Errorf("switching to %s: %w", fd.Path(), err)
		}
	}
	if err := o.closeServed(served); err != nil {
		// The tables no longer use it: report, but the origin is local.
		o.log().WithError(err).Warn("lazy: closing the served device after the switch")
	}
	o.log().WithField("device", fd.Path()).Info("lazy: origin is local")
	return true, nil
}
