package snapshotter

import (
	"context"
	"slices"
	"sync"
)

// keyLocks serialises the operations that change one snapshot key: two
// Commits of one key, or a Remove racing a Commit, would otherwise both
// pass their first transaction and work on one device at once (two
// committed snapshots sharing it, or a committed snapshot whose device
// was deleted). Locks are per key and free when unused, so operations on
// different snapshots never wait for each other.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{} // holds one token while locked
	refs int           // holders and waiters
}

// lock takes the locks of keys, in sorted order so that two callers
// locking overlapping sets never deadlock. It gives up when ctx ends and
// returns the function that releases them.
func (l *keyLocks) lock(ctx context.Context, keys ...string) (func(), error) {
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	var held []string
	unlock := func() {
		for i := len(held) - 1; i >= 0; i-- {
			l.release(held[i], true)
		}
	}
	for _, k := range keys {
		kl := l.ref(k)
		// A free lock is taken even on a cancelled context (select
		// would pick at random): clean-ups run on such contexts.
		select {
		case kl.ch <- struct{}{}:
			held = append(held, k)
			continue
		default:
		}
		select {
		case kl.ch <- struct{}{}:
			held = append(held, k)
		case <-ctx.Done():
			l.release(k, false)
			unlock()
			return nil, ctx.Err()
		}
	}
	return unlock, nil
}

func (l *keyLocks) ref(key string) *keyLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = map[string]*keyLock{}
	}
	kl, ok := l.locks[key]
	if !ok {
		kl = &keyLock{ch: make(chan struct{}, 1)}
		l.locks[key] = kl
	}
	kl.refs++
	return kl
}

func (l *keyLocks) release(key string, held bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kl := l.locks[key]
	if held {
		<-kl.ch
	}
	if kl.refs--; kl.refs == 0 {
		delete(l.locks, key)
	}
}
