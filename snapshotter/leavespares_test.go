package snapshotter

import (
	"context"
	"testing"
)

// An offline tool is given the daemon's spare_devices (service maps the
// same settings for both) but must not make spares: gc --force would
// otherwise create devices while it removes them.
func TestLeaveSparesMakesNone(t *testing.T) {
	store := newTestStore(t)
	s, err := New(context.Background(), newFakePool(), store, Config{BaseSize: 64 << 20, Spares: 2, LeaveSpares: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.spares != nil {
		t.Fatal("New with LeaveSpares started the spare refill")
	}
}
