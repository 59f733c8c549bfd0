package s3fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// The same behaviour is checked against the in-process fake (fast, always)
// and a real versitygw gateway (when installed).
var suite = []struct {
	name string
	fn   func(t *testing.T, h *harness)
}{
	{"Ordering", testOrdering},
	{"Errors", testErrors},
	{"Faults", testFaults},
	{"RetriesExhausted", testRetriesExhausted},
	{"ObjectChanged", testObjectChanged},
	{"DownloadTimeout", testDownloadTimeout},
	{"BoundedMemory", testBoundedMemory},
	{"Queue", testQueue},
	{"CloseEarly", testCloseEarly},
	{"ListPutStat", testListPutStat},
}

func TestFake(t *testing.T) {
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, fakeHarness(t)) })
	}
}

func TestVersityGW(t *testing.T) {
	h := versityHarness(t)
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) {
			h.proxy.ClearFaults()
			h.proxy.ResetLog()
			tc.fn(t, h)
		})
	}
}

func testOrdering(t *testing.T, h *harness) {
	cfg := h.config()
	c := h.client(t, cfg)
	ps := int(cfg.PartSize)
	for i, size := range []int{0, 1, ps - 1, ps, ps + 1, 10*ps + 123} {
		key := fmt.Sprintf("images/order-%d", size)
		data := randomBytes(size, uint64(i))
		etag := h.put(t, key, data)

		got, _, err := readAll(t, c, key)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		sameBytes(t, got, data)

		// Small reads exercise Read rather than WriteTo.
		o, err := c.Open(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if o.Size != int64(size) || o.ETag != etag || o.Key != key {
			t.Errorf("Object = {Key %q Size %d ETag %s}, want {%q %d %s}", o.Key, o.Size, o.ETag, key, size, etag)
		}
		small, err := io.ReadAll(iotest.HalfReader(o))
		o.Close()
		if err != nil {
			t.Fatalf("size %d, small reads: %v", size, err)
		}
		sameBytes(t, small, data)
	}
	// Every GET after a download's first is pinned to its ETag.
	for _, r := range h.proxy.GetsOf(h.bucket, fmt.Sprintf("images/order-%d", 10*ps+123)) {
		if !strings.HasPrefix(r.Range, "bytes=0-") && r.IfMatch == "" {
			t.Errorf("GET %s without If-Match", r.Range)
		}
	}
}

func testErrors(t *testing.T, h *harness) {
	cfg := h.config()
	c := h.client(t, cfg)
	ctx := context.Background()

	_, err := c.Open(ctx, "images/missing")
	wantErr(t, err, s3fetch.ErrNoSuchKey, errdefs.ErrNotFound, "no such key: s3://"+h.bucket+"/images/missing")
	_, err = c.Stat(ctx, "images/missing")
	wantErr(t, err, s3fetch.ErrNoSuchKey, errdefs.ErrNotFound, "images/missing")
	if ok, err := c.Exists(ctx, "images/missing"); ok || err != nil {
		t.Errorf("Exists(missing) = %v, %v", ok, err)
	}

	bad := cfg
	bad.Bucket = "no-such-bucket-here"
	_, err = h.client(t, bad).Open(ctx, "images/x")
	wantErr(t, err, s3fetch.ErrNoSuchBucket, errdefs.ErrNotFound, "no such bucket 'no-such-bucket-here'")

	h.put(t, "images/denied", []byte("secret"))
	h.proxy.Inject(&s3test.Rule{Match: s3test.MatchGet("images/denied"), Fault: s3test.Fault{Status: http.StatusForbidden, Code: "AccessDenied"}})
	_, err = c.Open(ctx, "images/denied")
	wantErr(t, err, s3fetch.ErrAccessDenied, errdefs.ErrPermissionDenied, "S3 access denied for bucket '"+h.bucket+"' key 'images/denied'")

	// Invalid keys fail before any request.
	h.proxy.ResetLog()
	for _, key := range []string{"", "/etc/passwd", "images/../secret", "images/a\x00b"} {
		_, err = c.Open(ctx, key)
		if !errors.Is(err, s3fetch.ErrInvalidKey) || !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	if n := len(h.proxy.Requests()); n != 0 {
		t.Errorf("invalid keys caused %d requests", n)
	}
}

func wantErr(t *testing.T, err, kind, defKind error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", kind)
	}
	if !errors.Is(err, kind) || !errors.Is(err, defKind) {
		t.Errorf("error %q is not %v / %v", err, kind, defKind)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not contain %q", err, msg)
	}
}

func testFaults(t *testing.T, h *harness) {
	ps := int64(64 << 10)
	data := randomBytes(int(4*ps+1000), 42)
	const key = "images/faulty.tar"
	h.put(t, key, data)
	// Part 2 starts at 2*ps; faults hit its first request, and the retry
	// must ask for the bytes not yet received.
	cases := []struct {
		name       string
		fault      s3test.Fault
		times      int
		wantResume int64 // Range start of the retry
		part       int64 // which part's GET is hit; 0 is the one Open makes
	}{
		{"part 0 reset mid-body", s3test.Fault{ResetAfter: 10000}, 1, 10000, 0},
		{"part 0 503", s3test.Fault{Status: 503, Code: "SlowDown"}, 1, 0, 0},
		{"part 0 stall mid-body", s3test.Fault{StallBody: 3 * time.Second, StallAfterBytes: 7000}, 1, 7000, 0},
		{"503 SlowDown", s3test.Fault{Status: 503, Code: "SlowDown"}, 2, 2 * ps, 2},
		{"500 InternalError", s3test.Fault{Status: 500, Code: "InternalError"}, 1, 2 * ps, 2},
		{"429", s3test.Fault{Status: 429, Code: "TooManyRequests"}, 1, 2 * ps, 2},
		{"reset mid-body", s3test.Fault{ResetAfter: 10000}, 1, 2*ps + 10000, 2},
		{"reset before body", s3test.Fault{ResetBeforeBody: true}, 1, 2 * ps, 2},
		{"truncated body", s3test.Fault{TruncateAfter: 20000}, 1, 2*ps + 20000, 2},
		{"stall mid-body", s3test.Fault{StallBody: 3 * time.Second, StallAfterBytes: 5000}, 1, 2*ps + 5000, 2},
		{"stall headers", s3test.Fault{StallHeaders: 3 * time.Second}, 1, 2 * ps, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.proxy.ClearFaults()
			h.proxy.ResetLog()
			cfg := h.config()
			cfg.PartTimeout = 0.3
			c := h.client(t, cfg)
			p2 := tc.part * ps // first byte of the part hit
			rule := h.proxy.Inject(&s3test.Rule{Match: s3test.MatchRangeFrom(key, p2), Times: tc.times, Fault: tc.fault})
			got, st, err := readAll(t, c, key)
			if err != nil {
				t.Fatalf("read with %s: %v", tc.name, err)
			}
			sameBytes(t, got, data)
			if n := rule.Applied(h.proxy); n != tc.times {
				t.Errorf("fault applied %d times, want %d", n, tc.times)
			}
			if st.Retries != tc.times {
				t.Errorf("Retries = %d, want %d", st.Retries, tc.times)
			}
			// The request after the last faulty one resumes at the
			// right byte, pinned to the ETag.
			var seen int
			var resumed *s3test.Request
			for _, r := range h.proxy.GetsOf(h.bucket, key) {
				if strings.HasPrefix(r.Range, fmt.Sprintf("bytes=%d-", p2)) || strings.HasPrefix(r.Range, fmt.Sprintf("bytes=%d-", tc.wantResume)) {
					seen++
					if seen == tc.times+1 {
						resumed = &r
					}
				}
			}
			want := fmt.Sprintf("bytes=%d-%d", tc.wantResume, p2+ps-1)
			if resumed == nil || resumed.Range != want {
				t.Fatalf("resumed request %+v, want Range %s; requests: %+v", resumed, want, h.proxy.GetsOf(h.bucket, key))
			}
			// Only Open's very first request, which learns the ETag,
			// goes unpinned.
			if resumed.IfMatch == "" && resumed.Range != fmt.Sprintf("bytes=0-%d", ps-1) {
				t.Errorf("resumed request has no If-Match")
			}
		})
	}
}

func testRetriesExhausted(t *testing.T, h *harness) {
	data := randomBytes(200<<10, 7)
	const key = "images/always-503"
	h.put(t, key, data)
	cfg := h.config()
	cfg.MaxRetries = 2
	c := h.client(t, cfg)
	h.proxy.Inject(&s3test.Rule{Match: s3test.MatchRangeFrom(key, 64<<10), Fault: s3test.Fault{Status: 503, Code: "SlowDown"}})
	_, _, err := readAll(t, c, key)
	if err == nil || !strings.Contains(err.Error(), "s3://"+h.bucket+"/"+key) || !strings.Contains(err.Error(), "3 attempts") {
		t.Fatalf("error = %v, want one naming the key after 3 attempts", err)
	}
	if errors.Is(err, s3fetch.ErrObjectChanged) || errors.Is(err, s3fetch.ErrNoSuchKey) {
		t.Errorf("error %v has the wrong kind", err)
	}
	if n := len(h.proxy.GetsOf(h.bucket, key)); n > 2+3+2 {
		t.Errorf("%d GETs, retries not bounded", n)
	}
}

func testObjectChanged(t *testing.T, h *harness) {
	ps := int64(64 << 10)
	const key = "images/replaced.tar"
	h.put(t, key, randomBytes(int(6*ps), 1))
	cfg := h.config()
	cfg.Concurrency = 1 // parts strictly in order, so the swap lands between parts
	c := h.client(t, cfg)
	var once sync.Once
	h.proxy.Inject(&s3test.Rule{Match: s3test.MatchRangeFrom(key, 2*ps), Times: 1, Fault: s3test.Fault{
		Before: func() { once.Do(func() { h.put(t, key, randomBytes(int(6*ps), 2)) }) },
	}})
	_, _, err := readAll(t, c, key)
	wantErr(t, err, s3fetch.ErrObjectChanged, errdefs.ErrFailedPrecondition, "s3://"+h.bucket+"/"+key)
	var status int
	for _, r := range h.proxy.GetsOf(h.bucket, key) {
		if strings.HasPrefix(r.Range, fmt.Sprintf("bytes=%d-", 2*ps)) {
			status = r.Status
		}
	}
	if status != http.StatusPreconditionFailed {
		t.Errorf("GET of part 2 got status %d, want 412 from If-Match", status)
	}
}

func testDownloadTimeout(t *testing.T, h *harness) {
	const key = "images/slow.tar"
	h.put(t, key, randomBytes(300<<10, 3))
	cfg := h.config()
	cfg.DownloadTimeout = 0.5
	cfg.PartTimeout = 10
	c := h.client(t, cfg)
	h.proxy.Inject(&s3test.Rule{Match: s3test.MatchRangeFrom(key, 64<<10), Fault: s3test.Fault{StallBody: 5 * time.Second, StallAfterBytes: 100}})
	start := time.Now()
	_, _, err := readAll(t, c, key)
	if err == nil {
		t.Fatal("download finished despite the stall")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("timeout took %v", el)
	}
	wantErr(t, err, s3fetch.ErrDownloadTimeout, context.DeadlineExceeded, "download timeout after 0.5s")
	if !strings.Contains(err.Error(), key) {
		t.Errorf("error %q does not name the key", err)
	}
}

func testBoundedMemory(t *testing.T, h *harness) {
	ps := 64 << 10
	data := randomBytes(20*ps+17, 5)
	const key = "images/big.tar"
	h.put(t, key, data)
	cfg := h.config()
	cfg.Concurrency = 3
	c := h.client(t, cfg)
	o, err := c.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var got bytes.Buffer
	buf := make([]byte, 16<<10)
	maxSeen := 0
	for {
		n, err := o.Read(buf)
		got.Write(buf[:n])
		if st := o.Stats(); st.BuffersInUse > maxSeen {
			maxSeen = st.BuffersInUse
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // a slow consumer lets the read-ahead fill up
	}
	sameBytes(t, got.Bytes(), data)
	st := o.Stats()
	if st.MaxBuffersInUse > cfg.Concurrency+1 || maxSeen > cfg.Concurrency+1 {
		t.Errorf("up to %d part buffers in flight (sampled %d), limit %d", st.MaxBuffersInUse, maxSeen, cfg.Concurrency+1)
	}
	if st.MaxBuffersInUse < cfg.Concurrency {
		t.Errorf("only %d part buffers ever in flight: no read-ahead?", st.MaxBuffersInUse)
	}
	if st.BuffersInUse != 0 {
		t.Errorf("%d buffers still held at EOF", st.BuffersInUse)
	}
}

func testQueue(t *testing.T, h *harness) {
	h.put(t, "images/q1", randomBytes(1000, 1))
	h.put(t, "images/q2", randomBytes(1000, 2))
	cfg := h.config()
	cfg.DownloadQueueSize = 1
	c := h.client(t, cfg)
	ctx := context.Background()

	first, err := c.Open(ctx, "images/q1")
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	var second *s3fetch.Object
	go func() {
		var err error
		second, err = c.Open(ctx, "images/q2")
		opened <- err
	}()
	waitFor(t, func() bool { return c.QueueStats().Waiting == 1 })
	select {
	case err := <-opened:
		t.Fatalf("second Open returned (%v) while the first held the only slot", err)
	case <-time.After(100 * time.Millisecond):
	}
	if st := c.QueueStats(); st != (s3fetch.QueueStats{Capacity: 1, Active: 1, Waiting: 1}) {
		t.Errorf("QueueStats = %+v", st)
	}
	first.Close()
	if err := <-opened; err != nil {
		t.Fatalf("second Open after Close: %v", err)
	}

	// While the slot is taken, a cancelled wait returns the ctx error.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Open(cctx, "images/q1")
		errc <- err
	}()
	waitFor(t, func() bool { return c.QueueStats().Waiting == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait returned %v, want context.Canceled", err)
	}
	second.Close()
	if st := c.QueueStats(); st.Active != 0 || st.Waiting != 0 {
		t.Errorf("after all Close: QueueStats = %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testListPutStat(t *testing.T, h *harness) {
	cfg := h.config()
	c := h.client(t, cfg)
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 7 {
		key := fmt.Sprintf("layers/l%02d", i)
		data := randomBytes(100+i, uint64(i))
		if _, err := c.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
		want[key] = data
	}
	h.put(t, "other/x", []byte("x"))
	objs, err := c.List(ctx, "layers/")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(want) {
		t.Fatalf("List = %d objects, want %d: %+v", len(objs), len(want), objs)
	}
	for _, o := range objs {
		if int64(len(want[o.Key])) != o.Size || o.ETag == "" || o.LastModified.IsZero() {
			t.Errorf("List entry %+v", o)
		}
		st, err := c.Stat(ctx, o.Key)
		if err != nil || st.Size != o.Size || st.ETag != o.ETag {
			t.Errorf("Stat(%s) = %+v, %v; List said %+v", o.Key, st, err, o)
		}
		got, _, err := readAll(t, c, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, got, want[o.Key])
	}
	if ok, err := c.Exists(ctx, "layers/l03"); !ok || err != nil {
		t.Errorf("Exists(layers/l03) = %v, %v", ok, err)
	}
	// A source shorter than declared aborts the upload.
	if _, err := c.Put(ctx, "layers/short", strings.NewReader("abc"), 10); err == nil {
		t.Error("Put of a short source succeeded")
	}
	if ok, _ := c.Exists(ctx, "layers/short"); ok {
		t.Error("short upload left an object behind")
	}
}

// Closing mid-download stops the read-ahead and gives back every buffer and
// the queue slot; a concurrent Close unblocks a Read waiting on a stalled part.
func testCloseEarly(t *testing.T, h *harness) {
	const key = "images/abandoned.tar"
	h.put(t, key, randomBytes(12*64<<10, 11))
	cfg := h.config()
	c := h.client(t, cfg)
	o, err := c.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(o, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	o.Close()
	if st := o.Stats(); st.BuffersInUse != 0 {
		t.Errorf("%d buffers held after Close", st.BuffersInUse)
	}
	if _, err := o.Read(make([]byte, 1)); err == nil {
		t.Error("Read after Close succeeded")
	}

	h.proxy.Inject(&s3test.Rule{Match: s3test.MatchRangeFrom(key, 64<<10), Fault: s3test.Fault{StallHeaders: 10 * time.Second}})
	o, err = c.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, o)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	o.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Copy of a closed object reported success")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not unblock a waiting Read")
	}
	if st := c.QueueStats(); st.Active != 0 {
		t.Errorf("QueueStats after Close = %+v", st)
	}
}
