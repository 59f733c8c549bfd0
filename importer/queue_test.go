package importer

import (
	"context"
	"slices"
	"testing"
	"time"
)

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFIFOAdmitsInArrivalOrder(t *testing.T) {
	q := newFIFO(1)
	ctx := context.Background()
	relA, err := q.Acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	admitted := make(chan string, 3)
	for _, id := range []string{"b", "c", "d"} {
		go func() {
			rel, err := q.Acquire(ctx, id)
			if err != nil {
				t.Error(err)
				return
			}
			admitted <- id
			rel()
		}()
		// Arrival order is what the test is about: wait until id is in line.
		waitFor(t, id+" in line", func() bool { _, _, w := q.snapshot(); return slices.Contains(w, id) })
	}
	c, active, waiting := q.snapshot()
	if c != 1 || !slices.Equal(active, []string{"a"}) || !slices.Equal(waiting, []string{"b", "c", "d"}) {
		t.Fatalf("snapshot = %d %q %q, want 1 [a] [b c d]", c, active, waiting)
	}
	relA()
	relA() // a second release is ignored
	var got []string
	for range 3 {
		got = append(got, <-admitted)
	}
	if !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Errorf("admitted %q, want [b c d]", got)
	}
	if _, active, waiting := q.snapshot(); len(active)+len(waiting) != 0 {
		t.Errorf("queue not empty after all released: %q %q", active, waiting)
	}
}

func TestFIFOLeavingTheLine(t *testing.T) {
	q := newFIFO(2)
	bg := context.Background()
	relA, _ := q.Acquire(bg, "a")
	relB, _ := q.Acquire(bg, "b")
	ctx, cancel := context.WithCancelCause(bg)
	errc := make(chan error, 1)
	go func() {
		_, err := q.Acquire(ctx, "c")
		errc <- err
	}()
	waitFor(t, "c in line", func() bool { _, _, w := q.snapshot(); return len(w) == 1 })
	cancel(ErrCancelled)
	if err := <-errc; err != ErrCancelled {
		t.Errorf("Acquire of a cancelled waiter: %v, want its cause %v", err, ErrCancelled)
	}
	if _, active, waiting := q.snapshot(); !slices.Equal(active, []string{"a", "b"}) || len(waiting) != 0 {
		t.Errorf("after c left: active %q waiting %q", active, waiting)
	}
	relA()
	relB()
	// Capacity 2 is honoured after the churn.
	r1, _ := q.Acquire(bg, "x")
	r2, _ := q.Acquire(bg, "y")
	done := make(chan struct{})
	go func() { r, _ := q.Acquire(bg, "z"); r(); close(done) }()
	select {
	case <-done:
		t.Fatal("a third holder was admitted to a queue of 2")
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	<-done
	r2()
}
