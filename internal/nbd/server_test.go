package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeClient plays the kernel's side of the transmission phase.
type fakeClient struct {
	t    *testing.T
	conn net.Conn
	done chan error // serve's result
}

func socketpair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		c, err := serverConn(fd)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

func startServer(t *testing.T, size int64, b io.ReaderAt, opt Options) *fakeClient {
	t.Helper()
	s, c := socketpair(t)
	fc := &fakeClient{t: t, conn: c, done: make(chan error, 1)}
	go func() { fc.done <- serve(s, size, b, opt) }()
	t.Cleanup(func() { c.Close() })
	return fc
}

func (c *fakeClient) send(typ uint16, handle, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := make([]byte, requestSize)
	request{magic: requestMagic, typ: typ, handle: handle, offset: off, length: length}.marshal(b)
	if _, err := c.conn.Write(append(b, payload...)); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one reply; want is how many data bytes follow it if it
// succeeded, by handle.
func (c *fakeClient) recv(dataLen func(handle uint64) int) (handle uint64, errno uint32, data []byte) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, replySize)
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	if m := binary.BigEndian.Uint32(hdr); m != replyMagic {
		c.t.Fatalf("reply magic %#x", m)
	}
	errno = binary.BigEndian.Uint32(hdr[4:])
	handle = binary.BigEndian.Uint64(hdr[8:])
	if errno == 0 {
		data = make([]byte, dataLen(handle))
		if _, err := io.ReadFull(c.conn, data); err != nil {
			c.t.Fatalf("reading reply data: %v", err)
		}
	}
	return handle, errno, data
}

func (c *fakeClient) roundTrip(typ uint16, off uint64, length uint32, payload []byte) (uint32, []byte) {
	c.t.Helper()
	const h = 0xfeedface12345678
	c.send(typ, h, off, length, payload)
	n := 0
	if typ == cmdRead {
		n = int(length)
	}
	handle, errno, data := c.recv(func(uint64) int { return n })
	if handle != h {
		c.t.Fatalf("handle %#x, want %#x", handle, uint64(h))
	}
	return errno, data
}

func (c *fakeClient) wait() error {
	c.t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(10 * time.Second):
		c.t.Fatal("server did not end")
		return nil
	}
}

func randomImage(size int) []byte {
	b := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(b)
	return b
}

func TestServeReads(t *testing.T) {
	img := randomImage(1 << 20)
	c := startServer(t, int64(len(img)), bytes.NewReader(img), Options{})
	for _, r := range []struct{ off, n int }{{0, 4096}, {4096, 65536}, {len(img) - 512, 512}, {0, len(img)}, {12345, 1}} {
		errno, data := c.roundTrip(cmdRead, uint64(r.off), uint32(r.n), nil)
		if errno != 0 || !bytes.Equal(data, img[r.off:r.off+r.n]) {
			t.Fatalf("read %d+%d: errno %d, data equal %v", r.off, r.n, errno, bytes.Equal(data, img[r.off:r.off+r.n]))
		}
	}
	c.send(cmdDisc, 1, 0, 0, nil)
	if err := c.wait(); err != nil {
		t.Fatalf("serve after NBD_CMD_DISC: %v", err)
	}
	// The server closed its end: the client sees EOF.
	if _, err := c.conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after disconnect the client reads %v, want EOF", err)
	}
}

func TestServeRefusals(t *testing.T) {
	img := randomImage(64 << 10)
	c := startServer(t, int64(len(img)), bytes.NewReader(img), Options{})
	size := uint64(len(img))
	for _, tc := range []struct {
		name      string
		typ       uint16
		off       uint64
		n         uint32
		payload   []byte
		wantErrno uint32
	}{
		{"write", cmdWrite, 0, 4096, make([]byte, 4096), errPerm},
		{"trim", cmdTrim, 0, 4096, nil, errPerm},
		{"write zeroes", cmdWriteZeroes, 0, 4096, nil, errPerm},
		{"flush", cmdFlush, 0, 0, nil, 0},
		{"unknown", 42, 0, 0, nil, errInval},
		{"past end", cmdRead, size - 512, 1024, nil, errInval},
		{"offset past end", cmdRead, size + 4096, 512, nil, errInval},
		{"offset wraps", cmdRead, ^uint64(0) - 100, 512, nil, errInval},
		{"oversize", cmdRead, 0, maxRequest + 4096, nil, errInval},
	} {
		errno, _ := c.roundTrip(tc.typ, tc.off, tc.n, tc.payload)
		if errno != tc.wantErrno {
			t.Errorf("%s: errno %d, want %d", tc.name, errno, tc.wantErrno)
		}
	}
	// The write payload was skipped: the stream is still in step.
	if errno, data := c.roundTrip(cmdRead, 0, 4096, nil); errno != 0 || !bytes.Equal(data, img[:4096]) {
		t.Fatalf("read after refusals: errno %d", errno)
	}
}

type failingReader struct {
	r          io.ReaderAt
	start, end int64
}

var errBackend = errors.New("backend down")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off < f.end && off+int64(len(p)) > f.start {
		return 0, errBackend
	}
	return f.r.ReadAt(p, off)
}

// shortReader returns less than asked with a nil error, which
// io.ReaderAt forbids; the server must not pass it on as data.
type shortReader struct{}

func (shortReader) ReadAt(p []byte, off int64) (int, error) { return len(p) / 2, nil }

func TestServeBackendErrorIsEIO(t *testing.T) {
	img := randomImage(1 << 20)
	var mu sync.Mutex
	var reported []int64
	opt := Options{OnReadError: func(off int64, n int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if !errors.Is(err, errBackend) || n != 4096 {
			t.Errorf("OnReadError(%d, %d, %v)", off, n, err)
		}
		reported = append(reported, off)
	}}
	c := startServer(t, int64(len(img)), failingReader{bytes.NewReader(img), 8192, 16384}, opt)
	if errno, _ := c.roundTrip(cmdRead, 8192, 4096, nil); errno != errIO {
		t.Fatalf("failing range: errno %d, want EIO", errno)
	}
	if errno, data := c.roundTrip(cmdRead, 16384, 4096, nil); errno != 0 || !bytes.Equal(data, img[16384:20480]) {
		t.Fatalf("good range after a failure: errno %d", errno)
	}
	mu.Lock()
	if len(reported) != 1 || reported[0] != 8192 {
		t.Errorf("OnReadError saw %v, want [8192]", reported)
	}
	mu.Unlock()

	c2 := startServer(t, 1<<20, shortReader{}, Options{})
	if errno, _ := c2.roundTrip(cmdRead, 0, 4096, nil); errno != errIO {
		t.Fatalf("short read: errno %d, want EIO", errno)
	}
}

// EOF together with a full buffer is a valid io.ReaderAt answer at the end.
type eofReader struct{ b []byte }

func (e eofReader) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, e.b[off:])
	return n, io.EOF
}

func TestServeFullReadWithEOF(t *testing.T) {
	img := randomImage(8192)
	c := startServer(t, int64(len(img)), eofReader{img}, Options{})
	if errno, data := c.roundTrip(cmdRead, 4096, 4096, nil); errno != 0 || !bytes.Equal(data, img[4096:]) {
		t.Fatalf("errno %d", errno)
	}
}

// gatedReader blocks each read until its offset is released, and
// counts how many run at once.
type gatedReader struct {
	img      []byte
	gates    map[int64]chan struct{}
	cur, max atomic.Int32
	started  chan int64
}

func (g *gatedReader) ReadAt(p []byte, off int64) (int, error) {
	n := g.cur.Add(1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			break
		}
	}
	g.started <- off
	<-g.gates[off]
	g.cur.Add(-1)
	return copy(p, g.img[off:]), nil
}

func TestServeConcurrentOutOfOrder(t *testing.T) {
	const n, inFlight = 8, 8
	img := randomImage(n * 4096)
	g := &gatedReader{img: img, gates: map[int64]chan struct{}{}, started: make(chan int64, n)}
	for i := range n {
		g.gates[int64(i*4096)] = make(chan struct{})
	}
	c := startServer(t, int64(len(img)), g, Options{MaxInFlight: inFlight})
	for i := range n {
		c.send(cmdRead, uint64(1000+i), uint64(i*4096), 4096, nil)
	}
	for range n {
		<-g.started
	}
	// Release in reverse: replies come back in that order, each matched
	// to its request by handle.
	for i := n - 1; i >= 0; i-- {
		close(g.gates[int64(i*4096)])
		h, errno, data := c.recv(func(uint64) int { return 4096 })
		if h != uint64(1000+i) || errno != 0 || !bytes.Equal(data, img[i*4096:(i+1)*4096]) {
			t.Fatalf("reply %d: handle %d errno %d", i, h, errno)
		}
	}
	if m := g.max.Load(); m != n {
		t.Errorf("%d reads ran at once, want %d", m, n)
	}
}

func TestServeBoundsInFlight(t *testing.T) {
	const n, inFlight = 12, 3
	img := randomImage(n * 4096)
	g := &gatedReader{img: img, gates: map[int64]chan struct{}{}, started: make(chan int64, n)}
	for i := range n {
		g.gates[int64(i*4096)] = make(chan struct{})
	}
	c := startServer(t, int64(len(img)), g, Options{MaxInFlight: inFlight})
	for i := range n {
		c.send(cmdRead, uint64(i), uint64(i*4096), 4096, nil)
	}
	got := map[uint64]bool{}
	for i := range n {
		off := <-g.started
		if i < inFlight {
			// Give the server a chance to (wrongly) start more.
			time.Sleep(10 * time.Millisecond)
		}
		close(g.gates[off])
		h, errno, _ := c.recv(func(uint64) int { return 4096 })
		if errno != 0 || got[h] {
			t.Fatalf("reply handle %d errno %d", h, errno)
		}
		got[h] = true
	}
	if m := g.max.Load(); m > inFlight {
		t.Errorf("%d reads ran at once, MaxInFlight is %d", m, inFlight)
	}
}

func TestServeDisconnectWaitsForInFlight(t *testing.T) {
	img := randomImage(8192)
	g := &gatedReader{img: img, gates: map[int64]chan struct{}{0: make(chan struct{})}, started: make(chan int64, 1)}
	c := startServer(t, int64(len(img)), g, Options{})
	c.send(cmdRead, 7, 0, 4096, nil)
	<-g.started
	c.send(cmdDisc, 8, 0, 0, nil)
	select {
	case err := <-c.done:
		t.Fatalf("serve ended (%v) with a read in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(g.gates[0])
	if h, errno, data := c.recv(func(uint64) int { return 4096 }); h != 7 || errno != 0 || !bytes.Equal(data, img[:4096]) {
		t.Fatalf("in-flight read after disconnect: handle %d errno %d", h, errno)
	}
	if err := c.wait(); err != nil {
		t.Fatal(err)
	}
}

func TestServeBadMagicEnds(t *testing.T) {
	c := startServer(t, 8192, bytes.NewReader(make([]byte, 8192)), Options{})
	if _, err := c.conn.Write(make([]byte, requestSize)); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(); !errors.Is(err, errProtocol) {
		t.Fatalf("serve: %v, want a protocol error", err)
	}
}

func TestServeClientGoneEnds(t *testing.T) {
	c := startServer(t, 8192, bytes.NewReader(make([]byte, 8192)), Options{})
	c.conn.Close()
	if err := c.wait(); err == nil || !errors.Is(err, io.EOF) {
		t.Fatalf("serve after the client closed: %v, want EOF", err)
	}
}

func TestConnectRejectsBadGeometry(t *testing.T) {
	for _, tc := range []struct {
		size int64
		bs   uint32
	}{{0, 0}, {4095, 0}, {8192, 1000}, {8192, 256}, {1 << 20, uint32(os.Getpagesize()) * 2}} {
		if _, err := Connect(t.Context(), tc.size, bytes.NewReader(nil), Options{BlockSize: tc.bs}); err == nil {
			t.Errorf("Connect(size %d, block size %d) succeeded", tc.size, tc.bs)
		}
	}
}

// TestLargeBuffersAreNotKept: a read buffer above maxPooledBuf is
// dropped after its reply, so a device keeps at most MaxInFlight small
// buffers however large the requests it once served.
func TestLargeBuffersAreNotKept(t *testing.T) {
	a, b := socketpair(t)
	t.Cleanup(func() { a.Close(); b.Close() })
	go io.Copy(io.Discard, b)
	s := &server{conn: a, size: maxRequest, backend: bytes.NewReader(make([]byte, maxRequest)), bufs: make(chan []byte, 1)}
	for _, n := range []uint32{4096, maxPooledBuf, maxPooledBuf + 4096, maxRequest} {
		s.wg.Add(1)
		s.read(request{magic: requestMagic, typ: cmdRead, handle: 1, length: n}, nil)
		buf := <-s.bufs
		if kept, want := cap(buf) > 0, n <= maxPooledBuf; kept != want {
			t.Errorf("read of %d bytes: buffer of cap %d kept=%v, want kept=%v", n, cap(buf), kept, want)
		}
	}
	if err := s.failed(); err != nil {
		t.Fatal(err)
	}
}
