package lazy_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/blockimage"
)

// A read that waits for a chunk holds the prefetch back: while the
// read's fetch is in the store, the prefetch starts no other fetch
// (beyond the ones its workers had started as the read came), and it
// goes on once the read is served. Without the gate the prefetch's
// fetches run beside the read's (and, on a slow CPU, in front of it).
func TestReadHoldsPrefetchBack(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := publishImage(t, st, 64*MiB, 21, ext(0, 64*MiB))
	st.delay = 20 * time.Millisecond
	last := img.man.Chunks[len(img.man.Chunks)-1] // the prefetch comes to it last
	lastKey := blockimage.ChunkKey(prefix, last.Digest)
	var (
		others  atomic.Int64 // gets of other chunks
		entered = make(chan struct{})
		release = make(chan struct{})
		once    sync.Once
	)
	st.setFail(func(key string) error {
		if key != lastKey {
			others.Add(1)
			return nil
		}
		once.Do(func() { close(entered) })
		<-release
		return nil
	})
	cfg := a.config(t.TempDir(), st)
	cfg.Prefetch, cfg.PrefetchQuiet = 2, 50*time.Millisecond
	m := openManager(t, cfg)
	r := served(t, a, m, "base-gate", img)
	waitFor(t, "the prefetch to start", func() bool { return statusOf(t, m, "base-gate").Prefetched >= 2 })

	done := make(chan error, 1)
	buf := make([]byte, 4096)
	go func() {
		_, err := r.ReadAt(buf, last.Offset)
		done <- err
	}()
	<-entered
	before := others.Load()
	time.Sleep(300 * time.Millisecond) // 15 gets' time for each prefetch worker
	during := others.Load() - before
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sameBytes(t, buf, img.data[last.Offset:last.Offset+4096])
	if during > int64(cfg.Prefetch) {
		t.Errorf("the prefetch started %d fetches while a read waited for its chunk, want at most %d (those already started)", during, cfg.Prefetch)
	}
	waitFor(t, "the prefetch to complete", func() bool {
		s := statusOf(t, m, "base-gate")
		return s.ChunksPresent == s.ChunksTotal
	})
	if s := statusOf(t, m, "base-gate"); s.OnDemand != 1 {
		t.Errorf("on-demand fetches %d, want 1: %+v", s.OnDemand, s)
	}
}
