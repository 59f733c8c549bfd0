package lazy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/blockimage"
)

// cache is an origin's address space: the sparse cache file, whose chunk
// ranges hold the manifest's chunks once the bitmap says so, and which
// reads zeros everywhere else (no chunk is ever written outside its own
// range). Its ReadAt is what the served device reads through.
type cache struct {
	f      *os.File
	man    *blockimage.Manifest
	bm     *bitmap
	store  blockimage.Store
	prefix string
	// base is the origin's lifetime: cancelled when it is closed, so
	// that no fetch outlives it. timeout bounds one read's fetches.
	base    context.Context
	timeout time.Duration
	// fetches bounds the chunk fetches in flight, on demand and
	// prefetch together, hence the memory they hold (a chunk and its
	// compressed object each).
	fetches chan struct{}
	// demand holds the prefetch back while reads wait (gate.go).
	demand *gate

	mu      sync.Mutex
	flights map[int]*flight

	presentBytes atomic.Int64
	onDemand     atomic.Int64 // chunks fetched for a read
	prefetched   atomic.Int64 // chunks fetched by the prefetch
	readErrors   atomic.Int64 // reads that failed
	fetchErrors  atomic.Int64 // chunk fetches that failed
	lastErr      atomic.Pointer[timedError]
}

type timedError struct {
	err error
	at  time.Time
}

// flight is one fetch of a chunk; whoever else needs the chunk meanwhile
// waits for done and shares err.
type flight struct {
	done chan struct{}
	err  error
}

func newCache(base context.Context, f *os.File, man *blockimage.Manifest, bm *bitmap, cfg *Config) *cache {
	c := &cache{
		f: f, man: man, bm: bm, store: cfg.Store, prefix: cfg.Prefix,
		base: base, timeout: cfg.ReadTimeout,
		fetches: make(chan struct{}, cfg.MaxFetches),
		demand:  newGate(cfg.PrefetchQuiet),
		flights: map[int]*flight{},
	}
	for i, ch := range man.Chunks {
		if bm.has(i) {
			c.presentBytes.Add(ch.Length)
		}
	}
	return c
}

// ReadAt reads the origin's bytes at off, fetching first the chunks the
// range touches that are not present yet. A fetch that fails fails the
// read (the served device turns it into EIO) and is tried again by the
// next read of the chunk.
func (c *cache) ReadAt(p []byte, off int64) (int, error) {
	size := c.man.DeviceSize
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, errdefs.ErrInvalidArgument)
	}
	if off >= size {
		return 0, io.EOF
	}
	end := off + min(int64(len(p)), size-off)
	c.demand.touch()
	ctx, cancel := context.WithTimeout(c.base, c.timeout)
	defer cancel()
	if err := c.ensureRange(ctx, off, end); err != nil {
		c.readErrors.Add(1)
		return 0, fmt.Errorf("read [%d, %d): %w", off, end, err)
	}
	n, err := c.f.ReadAt(p[:end-off], off)
	if err != nil {
		c.readErrors.Add(1)
		c.setErr(fmt.Errorf("reading the cache file: %w", err))
		return n, err
	}
	if end-off < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// ensureRange fetches the missing chunks that overlap [off, end),
// holding the prefetch back while it waits for any.
func (c *cache) ensureRange(ctx context.Context, off, end int64) error {
	chunks := c.man.Chunks
	i := sort.Search(len(chunks), func(i int) bool { return chunks[i].End() > off })
	waiting := false
	defer func() {
		if waiting {
			c.demand.leave()
		}
	}()
	for ; i < len(chunks) && chunks[i].Offset < end; i++ {
		if !waiting && !c.bm.has(i) {
			waiting = true
			c.demand.enter()
		}
		if err := c.ensure(ctx, i, false); err != nil {
			return err
		}
	}
	return nil
}

// ensure makes chunk i present: at once if it is, by waiting if another
// caller is fetching it, or by fetching it. prefetch says who asks, for
// the counters.
func (c *cache) ensure(ctx context.Context, i int, prefetch bool) error {
	if c.bm.has(i) {
		return nil
	}
	c.mu.Lock()
	if c.bm.has(i) { // marked between the check and the lock
		c.mu.Unlock()
		return nil
	}
	if fl, ok := c.flights[i]; ok {
		c.mu.Unlock()
		select {
		case <-fl.done:
			return fl.err
		case <-ctx.Done():
			return fmt.Errorf("waiting for chunk %d: %w", i, ctx.Err())
		}
	}
	fl := &flight{done: make(chan struct{})}
	c.flights[i] = fl
	c.mu.Unlock()

	fl.err = c.fetch(ctx, i)
	c.mu.Lock()
	delete(c.flights, i)
	c.mu.Unlock()
	close(fl.done)
	if fl.err != nil {
		c.fetchErrors.Add(1)
		c.setErr(fl.err)
		return fl.err
	}
	if prefetch {
		c.prefetched.Add(1)
	} else {
		c.onDemand.Add(1)
	}
	return nil
}

// fetch gets chunk i, writes it at its offset, syncs it and only then
// marks it present: a chunk the bitmap names is on disk.
func (c *cache) fetch(ctx context.Context, i int) error {
	select {
	case c.fetches <- struct{}{}:
		defer func() { <-c.fetches }()
	case <-ctx.Done():
		return fmt.Errorf("waiting to fetch chunk %d: %w", i, ctx.Err())
	}
	ch := c.man.Chunks[i]
	buf := make([]byte, ch.Length)
	if _, err := blockimage.FetchChunk(ctx, c.store, c.prefix, i, ch, buf); err != nil {
		return err
	}
	if _, err := c.f.WriteAt(buf, ch.Offset); err != nil {
		return fmt.Errorf("chunk %d: writing the cache file: %w", i, err)
	}
	if err := unix.Fdatasync(int(c.f.Fd())); err != nil {
		return fmt.Errorf("chunk %d: syncing the cache file: %w", i, err)
	}
	if err := c.bm.mark(i); err != nil {
		return fmt.Errorf("chunk %d: %w", i, err)
	}
	c.presentBytes.Add(ch.Length)
	return nil
}

func (c *cache) setErr(err error) {
	if errors.Is(err, context.Canceled) && c.base.Err() != nil {
		return // closing, not failing
	}
	c.lastErr.Store(&timedError{err: err, at: time.Now()})
}
