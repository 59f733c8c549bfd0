package lazy_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/lazy"
)

// A Create that has passed its lookup when Close runs must not leave an
// origin attached after Close returned: Close snapshots m.origins and
// Create inserts into it afterwards (manager.go:185-187 vs 263-268), so
// its device is never closed and Create reports success on a closed
// manager.
func TestReviewCloseDuringCreate(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 7)
	cfg := a.config(t.TempDir(), st)
	inAttach, release := make(chan struct{}), make(chan struct{})
	served := cfg.AttachServed
	cfg.AttachServed = func(ctx context.Context, size int64, r io.ReaderAt) (lazy.Device, error) {
		close(inAttach)
		<-release
		return served(ctx, size, r) // a real attach (nbd.Connect) does not abort on a cancelled ctx once connected
	}
	m, err := lazy.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	created := make(chan error, 1)
	go func() { created <- m.Create(context.Background(), "base-7", img.man) }()
	<-inAttach
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	cerr := <-created
	time.Sleep(50 * time.Millisecond)
	d := a.servedDev("/dev/nbd1")
	if d == nil {
		t.Fatalf("no served device; events %v", a.eventList())
	}
	if !d.closed.Load() {
		t.Errorf("Create after Close: err=%v, and its served device %s is still attached after Close returned (events %v)", cerr, d.path, a.eventList())
	}
}
