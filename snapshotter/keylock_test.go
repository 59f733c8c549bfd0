package snapshotter

import (
	"context"
	"errors"
	"testing"
)

// TestKeyLocks checks that a held key blocks until the context ends, that
// a free key is taken even on a cancelled context, and that nothing is
// left in the map once every holder released.
func TestKeyLocks(t *testing.T) {
	var l keyLocks
	unlock, err := l.lock(context.Background(), "b", "a", "a")
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for range 50 {
		if _, err := l.lock(cancelled, "c", "a"); !errors.Is(err, context.Canceled) {
			t.Fatalf("locking a held key on a cancelled context: %v", err)
		}
		u, err := l.lock(cancelled, "c")
		if err != nil {
			t.Fatalf("locking a free key on a cancelled context: %v", err)
		}
		u()
	}
	unlock()
	if len(l.locks) != 0 {
		t.Errorf("locks left: %v", l.locks)
	}
}
