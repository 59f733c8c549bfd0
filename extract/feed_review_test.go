package extract

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Review 48: on a failed extraction Result.Digest must be the digest of
// the Result.CompressedBytes bytes the extraction consumed, as it was with
// asyncHash: not of whatever the sourceFeed goroutine happened to read
// ahead (up to feedBufs × feedBufSize more, depending on timing).
func TestFailedResultDigestCoversCompressedBytes(t *testing.T) {
	rnd := make([]byte, 8<<20)
	rand.New(rand.NewSource(1)).Read(rnd)
	// Refused at its first header, with megabytes of compressed stream
	// after it for the feed to read ahead.
	data := gz(t, mkTar(t, file("../escape", string(rnd))))
	for i := 0; i < 10; i++ {
		for _, validate := range []bool{true, false} {
			var res Result
			var err error
			if validate {
				res, err = Validate(context.Background(), bytes.NewReader(data), Options{})
			} else {
				res, err = Extract(context.Background(), bytes.NewReader(data), newSandbox(t).root, Options{})
			}
			if !errors.Is(err, ErrPathTraversal) {
				t.Fatalf("err = %v, want the first entry refused", err)
			}
			sum := sha256.Sum256(data[:res.CompressedBytes])
			if want := "sha256:" + hex.EncodeToString(sum[:]); res.Digest != want {
				t.Fatalf("validate %v, try %d: Digest %s is not the digest of the %d CompressedBytes (%s)",
					validate, i, res.Digest, res.CompressedBytes, want)
			}
		}
	}
}

// gateReader blocks its first Read until released, then serves r; it
// counts the Read calls.
type gateReader struct {
	r       io.Reader
	started chan struct{}
	release chan struct{}
	once    sync.Once
	reads   atomic.Int64
}

func (g *gateReader) Read(p []byte) (int, error) {
	g.reads.Add(1)
	g.once.Do(func() {
		close(g.started)
		<-g.release
	})
	return g.r.Read(p)
}

// Review 48: once stop is closed the feed starts no read of the source:
// only the one in flight completes (sourceReader.stop's contract: "the
// goroutine stops at its next read of the source"). A read started after
// stop on a stalled network source would hold up Close for nothing.
func TestSourceFeedNoReadAfterStop(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	for i := 0; i < 200; i++ {
		g := &gateReader{r: bytes.NewReader(data), started: make(chan struct{}), release: make(chan struct{})}
		s := &sourceReader{ctx: context.Background(), r: g, h: newSHA256(), limit: 1 << 40}
		stop := make(chan struct{})
		s.feedAsync(stop)
		<-g.started
		close(stop)
		close(g.release)
		s.waitFeed()
		if n := g.reads.Load(); n != 1 {
			t.Fatalf("try %d: %d reads of the source, want only the one in flight when stop closed", i, n)
		}
	}
}

// Review 48: no goroutine outlives Extract or Validate, whatever the way
// it ends.
func TestNoGoroutineLeftAfterExtract(t *testing.T) {
	rnd := make([]byte, 6<<20)
	rand.New(rand.NewSource(2)).Read(rnd)
	good := gz(t, mkTar(t, dir("etc"), file("etc/a", string(rnd))))
	bad := gz(t, mkTar(t, file("../escape", string(rnd))))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		r    func() io.Reader
		opts Options
	}{
		{"ok", context.Background(), func() io.Reader { return bytes.NewReader(good) }, Options{}},
		{"refused", context.Background(), func() io.Reader { return bytes.NewReader(bad) }, Options{}},
		{"source error", context.Background(), func() io.Reader { return &failAfter{r: bytes.NewReader(good), n: len(good) / 2} }, Options{}},
		{"limit", context.Background(), func() io.Reader { return bytes.NewReader(good) }, Options{MaxTotalSize: 3 << 20}},
		{"cancelled", cancelled, func() io.Reader { return bytes.NewReader(good) }, Options{}},
		{"truncated", context.Background(), func() io.Reader { return bytes.NewReader(good[:len(good)-1000]) }, Options{}},
	}
	base := runtime.NumGoroutine()
	for _, c := range cases {
		for _, validate := range []bool{true, false} {
			if validate {
				Validate(c.ctx, c.r(), c.opts)
			} else {
				Extract(c.ctx, c.r(), newSandbox(t).root, c.opts)
			}
			deadline := time.Now().Add(2 * time.Second)
			for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > base {
				buf := make([]byte, 1<<16)
				t.Fatalf("%s (validate %v): %d goroutines, %d before:\n%s", c.name, validate, n, base, buf[:runtime.Stack(buf, true)])
			}
		}
	}
}
