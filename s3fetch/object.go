package s3fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Object streams one S3 object in order while up to Config.Concurrency
// ranged GETs run ahead. Every GET after the first is pinned to the first
// response's ETag with If-Match, so an object replaced mid-download fails
// with ErrObjectChanged instead of yielding a mix of two versions.
//
// An Object holds a download queue slot and up to Concurrency+1 part
// buffers until Close (or until it is read to EOF); always Close it.
type Object struct {
	Key  string
	Size int64
	ETag string

	c        *Client
	ctx      context.Context // the whole download: caller ctx + download_timeout
	cancel   context.CancelCauseFunc
	stopTime context.CancelFunc
	release  func()

	parts []*part
	first atomic.Pointer[pending] // the response Open got, for part 0
	bufs  chan struct{}           // one token per part buffer in flight
	wg    sync.WaitGroup

	failMu  sync.Mutex
	failErr error

	// reader state, guarded by readMu; Close may come from another
	// goroutine to abort a blocked Read
	readMu  sync.Mutex
	next    int
	cur     *part
	off     int64
	readErr error

	closeOnce sync.Once

	inUse, maxInUse atomic.Int64
	retries         atomic.Int64
}

// part is the byte range [start, end) of the object.
type part struct {
	idx        int
	start, end int64
	buf        *[]byte
	done       chan struct{}
	err        error
}

func (p *part) len() int64 { return p.end - p.start }

// ObjectStats describes a download's progress, for logs and tests.
type ObjectStats struct {
	Parts int
	// BuffersInUse and MaxBuffersInUse count part buffers held (being
	// filled, or filled and waiting for the reader). MaxBuffersInUse never
	// exceeds Concurrency+1.
	BuffersInUse, MaxBuffersInUse int
	// Retries is how many ranged GETs were retried or resumed.
	Retries int
}

// Stats reports the download's buffer use and retries so far.
func (o *Object) Stats() ObjectStats {
	return ObjectStats{
		Parts:           len(o.parts),
		BuffersInUse:    int(o.inUse.Load()),
		MaxBuffersInUse: int(o.maxInUse.Load()),
		Retries:         int(o.retries.Load()),
	}
}

var errClosed = errors.New("s3fetch: read from closed object")

// Open starts downloading key and returns once the first response has
// arrived, so a missing key, a denied request or a missing bucket is reported
// here. ctx governs the whole download, not just Open: cancelling it aborts
// reads in progress. When the download queue is full Open waits for a slot
// (or for ctx). The whole download, until Close, must finish within
// Config.DownloadTimeout.
func (c *Client) Open(ctx context.Context, key string) (*Object, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := c.needBucket(); err != nil {
		return nil, err
	}
	release, err := c.queue.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	timeout := &Error{
		Op: "GetObject", Bucket: c.cfg.Bucket, Key: key, Kind: ErrDownloadTimeout,
		Msg: fmt.Sprintf("download of %s failed: download timeout after %v", objectURL(c.cfg.Bucket, key), c.cfg.DownloadTimeout),
	}
	tctx, stopTime := context.WithTimeoutCause(ctx, c.cfg.DownloadTimeout.Duration(), timeout)
	dctx, cancel := context.WithCancelCause(tctx)
	o := &Object{
		Key: key, c: c, ctx: dctx, cancel: cancel, stopTime: stopTime, release: release,
		bufs: make(chan struct{}, c.cfg.Concurrency+1),
	}
	if err := o.start(); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// start makes the first request, which tells the size and ETag, then plans
// the parts and starts the read-ahead.
func (o *Object) start() error {
	c := o.c
	firstEnd := int64(c.cfg.PartSize)
	var (
		first *pending
		err   error
	)
	for attempt := 0; ; attempt++ {
		first, err = o.request(0, firstEnd, "")
		if err == nil || o.ctx.Err() != nil || !retryable(err) || attempt >= c.cfg.MaxRetries {
			break
		}
		o.retries.Add(1)
		if err := sleep(o.ctx, c.backoff(attempt+1)); err != nil {
			return err
		}
	}
	if err != nil {
		if o.ctx.Err() != nil {
			return context.Cause(o.ctx)
		}
		if apiCode(err) == "InvalidRange" {
			// S3 answers a range request on an empty object with 416.
			return o.startEmpty()
		}
		return translate("GetObject", c.cfg.Bucket, o.Key, err)
	}
	size, err := first.totalSize(o)
	if err != nil {
		first.close()
		return err
	}
	o.Size, o.ETag = size, first.etag()
	o.first.Store(first)
	o.plan()
	o.run()
	return nil
}

func (o *Object) startEmpty() error {
	info, err := o.c.Stat(o.ctx, o.Key)
	if err != nil {
		return err
	}
	if info.Size != 0 {
		return &Error{Op: "GetObject", Bucket: o.c.cfg.Bucket, Key: o.Key, Kind: ErrCorrupt,
			Msg: fmt.Sprintf("S3 refused range 0- of %s but reports its size as %d", objectURL(o.c.cfg.Bucket, o.Key), info.Size)}
	}
	o.Size, o.ETag = 0, info.ETag
	return nil
}

func (o *Object) plan() {
	ps := int64(o.c.cfg.PartSize)
	for start, i := int64(0), 0; start < o.Size; start, i = start+ps, i+1 {
		o.parts = append(o.parts, &part{idx: i, start: start, end: min(start+ps, o.Size), done: make(chan struct{})})
	}
}

// run starts the dispatcher and the fetch workers. The dispatcher takes a
// buffer token for each part in order before handing it to a worker; since
// the reader frees tokens in the same order, the part the reader waits for
// always has a buffer and a worker, and at most Concurrency+1 buffers exist.
func (o *Object) run() {
	work := make(chan *part)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer close(work)
		for _, p := range o.parts {
			select {
			case o.bufs <- struct{}{}:
			case <-o.ctx.Done():
				return
			}
			p.buf = o.c.getBuf()
			n := o.inUse.Add(1)
			for {
				m := o.maxInUse.Load()
				if n <= m || o.maxInUse.CompareAndSwap(m, n) {
					break
				}
			}
			select {
			case work <- p:
			case <-o.ctx.Done():
				o.putBuf(p)
				return
			}
		}
	}()
	workers := min(o.c.cfg.Concurrency, len(o.parts))
	for range workers {
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			for p := range work {
				p.err = o.fetchPart(p)
				if p.err != nil {
					o.fail(p.err)
				}
				close(p.done)
				if p.err != nil {
					// Nobody will read this part.
					o.putBuf(p)
				}
			}
		}()
	}
}

// fail records the first error and stops the other fetches.
func (o *Object) fail(err error) {
	o.failMu.Lock()
	if o.failErr == nil {
		o.failErr = err
	}
	o.failMu.Unlock()
	o.cancel(err)
}

// failure is the error a reader sees once the download cannot continue.
func (o *Object) failure() error {
	o.failMu.Lock()
	defer o.failMu.Unlock()
	if o.failErr != nil {
		return o.failErr
	}
	if err := context.Cause(o.ctx); err != nil {
		return err
	}
	return errors.New("s3fetch: download stopped")
}

func (o *Object) putBuf(p *part) {
	if p.buf == nil {
		return
	}
	o.c.bufs.Put(p.buf)
	p.buf = nil
	o.inUse.Add(-1)
	<-o.bufs
}

func (c *Client) getBuf() *[]byte {
	if b, ok := c.bufs.Get().(*[]byte); ok && int64(cap(*b)) >= int64(c.cfg.PartSize) {
		return b
	}
	b := make([]byte, c.cfg.PartSize)
	return &b
}

// Read delivers the object's bytes in order.
func (o *Object) Read(b []byte) (int, error) {
	o.readMu.Lock()
	defer o.readMu.Unlock()
	if err := o.advance(); err != nil {
		return 0, err
	}
	n := copy(b, (*o.cur.buf)[o.off:o.cur.len()])
	o.consumed(n)
	return n, nil
}

// WriteTo copies the rest of the object to w straight from the part
// buffers; io.Copy uses it.
func (o *Object) WriteTo(w io.Writer) (int64, error) {
	o.readMu.Lock()
	defer o.readMu.Unlock()
	var total int64
	for {
		if err := o.advance(); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		n, err := w.Write((*o.cur.buf)[o.off:o.cur.len()])
		total += int64(n)
		o.consumed(n)
		if err != nil {
			return total, err
		}
	}
}

// advance makes o.cur the part holding the next unread byte, waiting for it
// to arrive, or returns io.EOF or the download's failure.
func (o *Object) advance() error {
	if o.readErr != nil {
		return o.readErr
	}
	if o.cur != nil {
		return nil
	}
	if o.next >= len(o.parts) {
		o.readErr = io.EOF
		o.finish()
		return io.EOF
	}
	p := o.parts[o.next]
	// p.err may only be looked at once p.done is closed.
	select {
	case <-p.done:
		if p.err == nil && o.ctx.Err() == nil {
			o.cur, o.off = p, 0
			return nil
		}
	case <-o.ctx.Done():
	}
	o.readErr = o.failure()
	return o.readErr
}

// consumed records n bytes of o.cur delivered, freeing its buffer for the
// read-ahead once it is used up.
func (o *Object) consumed(n int) {
	o.off += int64(n)
	if o.off == o.cur.len() {
		o.putBuf(o.cur)
		o.cur = nil
		o.next++
	}
}

// finish releases the queue slot once every byte has been delivered, so a
// caller that forgets Close after EOF does not block the queue.
func (o *Object) finish() {
	o.stopTime()
	o.release()
}

// Close stops the read-ahead, frees the buffers and the queue slot. It is
// safe to call more than once.
func (o *Object) Close() error {
	o.closeOnce.Do(func() {
		o.cancel(errClosed)
		if p := o.first.Swap(nil); p != nil {
			p.close()
		}
		o.wg.Wait()
		o.readMu.Lock()
		defer o.readMu.Unlock()
		if o.cur != nil {
			o.putBuf(o.cur)
			o.cur = nil
		}
		// Parts fetched but never read.
		for _, p := range o.parts {
			o.putBuf(p)
		}
		if o.readErr == nil {
			o.readErr = errClosed
		}
		o.stopTime()
		o.release()
	})
	return nil
}

var _ io.ReadCloser = (*Object)(nil)
var _ io.WriterTo = (*Object)(nil)

// timer helper so part.go can stay focused on the protocol.
func newStallTimer(d time.Duration, cancel context.CancelCauseFunc) *time.Timer {
	return time.AfterFunc(d, func() { cancel(errStalled) })
}
