package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// server answers the kernel's requests on one connection from a
// read-only backend. Reads run concurrently (at most MaxInFlight, each
// with its own buffer); every reply goes out under one mutex, header and
// data in one write, so replies never interleave.
//
// Memory: a buffer goes back to the pool only up to maxPooledBuf, so a
// device idle after a burst keeps at most MaxInFlight x maxPooledBuf
// (16 MiB by default). Connect lowers the queue's max_sectors_kb to
// maxPooledBuf, so the kernel sends no larger request and in flight is
// the same bound; if the kernel refused that setting, the worst case in
// flight is MaxInFlight x maxRequest (512 MiB), freed as each read ends.
type server struct {
	conn    net.Conn
	size    int64
	backend io.ReaderAt
	onErr   func(off int64, length int, err error)

	bufs chan []byte // one slot per read allowed in flight
	wmu  sync.Mutex  // serialises replies
	wg   sync.WaitGroup

	failErr error // first reply-write error (under wmu); the connection is then dead
}

// errProtocol marks a connection ended because the peer broke the protocol.
var errProtocol = errors.New("nbd: protocol error")

// serve runs the transmission phase on conn until the client sends
// NBD_CMD_DISC (nil), the connection fails or the client breaks the
// protocol (an error). On return every read it started has finished and
// conn is closed.
func serve(conn net.Conn, size int64, b io.ReaderAt, opt Options) error {
	opt = opt.withDefaults()
	s := &server{
		conn:    conn,
		size:    size,
		backend: b,
		onErr:   opt.OnReadError,
		bufs:    make(chan []byte, opt.MaxInFlight),
	}
	for range opt.MaxInFlight {
		s.bufs <- nil
	}
	err := s.loop()
	// In-flight reads still answer the kernel: on NBD_CMD_DISC it
	// waits for them before it tears the socket down.
	s.wg.Wait()
	conn.Close()
	if f := s.failed(); f != nil {
		return f
	}
	return err
}

func (s *server) failed() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.failErr
}

func (s *server) loop() error {
	hdr := make([]byte, requestSize)
	for {
		if _, err := io.ReadFull(s.conn, hdr); err != nil {
			return fmt.Errorf("nbd: reading request: %w", err)
		}
		r := parseRequest(hdr)
		if r.magic != requestMagic {
			return fmt.Errorf("%w: request magic %#x", errProtocol, r.magic)
		}
		switch r.typ {
		case cmdRead:
			if !s.inRange(r) {
				s.reply(r.handle, errInval, nil)
				continue
			}
			// Waiting for a slot here stops reading the socket, which
			// is the backpressure that bounds memory.
			buf := <-s.bufs
			s.wg.Add(1)
			go s.read(r, buf)
		case cmdWrite:
			// The payload follows the header; skip it (without
			// buffering it) to stay in step with the stream.
			if _, err := io.CopyN(io.Discard, s.conn, int64(r.length)); err != nil {
				return fmt.Errorf("nbd: skipping write payload: %w", err)
			}
			s.reply(r.handle, errPerm, nil)
		case cmdTrim, cmdWriteZeroes:
			s.reply(r.handle, errPerm, nil)
		case cmdFlush:
			// Nothing is ever written, so everything is durable.
			s.reply(r.handle, 0, nil)
		case cmdDisc:
			return nil
		default:
			s.reply(r.handle, errInval, nil)
		}
	}
}

func (s *server) inRange(r request) bool {
	if r.length > maxRequest || r.offset > uint64(s.size) {
		return false
	}
	return uint64(r.length) <= uint64(s.size)-r.offset
}

func (s *server) read(r request, buf []byte) {
	defer s.wg.Done()
	n := int(r.length)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	data := buf[:n]
	got, err := s.backend.ReadAt(data, int64(r.offset))
	if got == n {
		err = nil // io.ReaderAt may return io.EOF with a full read at the end
	} else if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		if s.onErr != nil {
			s.onErr(int64(r.offset), n, err)
		}
		// Never a short or partial read: the kernel gets EIO and no data.
		s.reply(r.handle, errIO, nil)
	} else {
		s.reply(r.handle, 0, data)
	}
	if cap(buf) > maxPooledBuf {
		buf = nil // a rare large request's buffer is not kept
	}
	s.bufs <- buf
}

// reply sends one reply (data only for a successful read). A write
// error means the connection is gone: the socket is closed so the
// request loop ends too.
func (s *server) reply(handle uint64, errno uint32, data []byte) {
	var hdr [replySize]byte
	putReply(hdr[:], errno, handle)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.failErr != nil {
		return
	}
	bufs := net.Buffers{hdr[:]}
	if len(data) > 0 {
		bufs = append(bufs, data)
	}
	if _, err := bufs.WriteTo(s.conn); err != nil {
		s.failErr = fmt.Errorf("nbd: writing reply: %w", err)
		s.conn.Close()
	}
}
