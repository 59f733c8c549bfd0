// Package nbd serves a read-only block image to the kernel through the
// Linux NBD driver, so /dev/nbdN can be a dm-thin external origin whose
// blocks this process fetches lazily.
//
// There is no userspace nbd-client: Connect configures the device with
// the classic ioctl interface over a unix socketpair and serves the other
// end itself in the NBD transmission phase. NBD_DO_IT runs on a locked OS
// thread with every signal blocked, because the kernel waits for it
// interruptibly and drops the connection on any signal.
//
// When the process dies its end of the socket closes and the kernel fails
// every request with EIO instead of hanging: there is no request timeout
// (NBD_SET_TIMEOUT 0, so a slow backend is never cut off) and no dead
// connection timeout (only netlink sets one).
package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune Connect. Zero values are the defaults.
type Options struct {
	BlockSize   uint32 // logical block size, default 4096
	MaxInFlight int    // concurrent reads served, default 16
	// OnReadError, if set, is called for every read the backend failed (the kernel gets EIO).
	OnReadError func(off int64, length int, err error)
	// Referenced, if set, says whether some table still names device
	// major:minor (the service passes a scan of every dm table). A
	// device whose connection died keeps its number in the tables that
	// used it, and connecting that index for another image would hand
	// them that image's bytes: Connect skips such an index, as it skips
	// one the kernel shows holders of (sysfs holders/).
	Referenced func(major, minor uint32) (bool, error)
}

func (o Options) withDefaults() Options {
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 16
	}
	return o
}

const (
	// readyTimeout bounds how long Connect waits for the kernel to show
	// the device's size once NBD_DO_IT runs.
	readyTimeout = 30 * time.Second
	// closeGrace is how long Close lets in-flight reads finish after
	// NBD_DISCONNECT before it cuts the socket (the kernel then fails
	// what is left with EIO).
	closeGrace = 10 * time.Second
)

// Device is a connected /dev/nbdN served by this process.
type Device struct {
	path         string
	index        int
	major, minor uint32

	fmu      sync.Mutex
	f        *os.File // the opener that ran NBD_DO_IT; nil once released
	conn     net.Conn // the server's end
	doitDone chan struct{}
	doitErr  error
	servErr  error
	done     chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Path is the device node, e.g. "/dev/nbd3".
func (d *Device) Path() string { return d.path }

// Dev is the device number (what a dm table names).
func (d *Device) Dev() (major, minor uint32) { return d.major, d.minor }

// Done is closed when the connection has ended for any reason (Close,
// the kernel dropping it, a broken protocol) and everything is released.
func (d *Device) Done() <-chan struct{} { return d.done }

// Close disconnects the device and waits until NBD_DO_IT has returned,
// the device is released and every server goroutine has finished. It is
// idempotent; every call returns the same result. Whoever still has the
// device open (a dm table) gets EIO from then on.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.fmu.Lock()
		if d.f != nil {
			// The kernel sends NBD_CMD_DISC after the queued requests;
			// the server answers what is in flight and closes.
			_ = ioctl(d.f.Fd(), ioctlDisconnect, 0)
		}
		d.fmu.Unlock()
		t := time.NewTimer(closeGrace)
		defer t.Stop()
		select {
		case <-d.done:
		case <-t.C:
			d.conn.Close()
			<-d.done
		}
		d.closeErr = d.err()
	})
	return d.closeErr
}

// err is why the connection ended, nil for a requested disconnect.
func (d *Device) err() error {
	if d.doitErr != nil {
		return fmt.Errorf("nbd: %s: NBD_DO_IT: %w", d.path, d.doitErr)
	}
	if d.servErr != nil && !errors.Is(d.servErr, net.ErrClosed) {
		return fmt.Errorf("nbd: %s: %w", d.path, d.servErr)
	}
	return nil
}

// connectMu keeps this process's Connects from racing each other for
// the same free device (other processes are handled by EBUSY).
var connectMu sync.Mutex

// errTaken means another opener got the device first.
var errTaken = errors.New("nbd: device taken")

// Connect finds a free /dev/nbdN (loading nbd.ko with `modprobe nbd` once
// if /sys/module/nbd is absent), connects it to a server in this process
// that answers reads from b (size bytes, read-only: writes and trims get
// EPERM, flush succeeds, unknown commands and reads past size EINVAL),
// and returns once the kernel device has the right size and is usable.
// ctx bounds Connect only, not the device's life. size must be a
// multiple of the block size.
func Connect(ctx context.Context, size int64, b io.ReaderAt, opt Options) (*Device, error) {
	opt = opt.withDefaults()
	bs := opt.BlockSize
	if bs < 512 || bs > uint32(os.Getpagesize()) || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("nbd: block size %d: want a power of two from 512 to the page size", bs)
	}
	if size <= 0 || size%int64(bs) != 0 {
		return nil, fmt.Errorf("nbd: size %d: want a positive multiple of the block size %d", size, bs)
	}
	if err := ensureModule(); err != nil {
		return nil, err
	}
	connectMu.Lock()
	defer connectMu.Unlock()
	idx, err := candidates()
	if err != nil {
		return nil, err
	}
	for _, n := range idx {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ok, err := usable(n, opt)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		d, err := connectTo(ctx, n, size, b, opt)
		if errors.Is(err, errTaken) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	return nil, fmt.Errorf("nbd: all %d nbd devices are in use (load nbd with a larger nbds_max)", len(idx))
}

// connectTo connects device n, undoing everything on failure. errTaken
// means another process won the device.
func connectTo(ctx context.Context, n int, size int64, b io.ReaderAt, opt Options) (*Device, error) {
	path, major, minor, err := ensureNode(n)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("nbd: open %s: %w", path, err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nbd: socketpair: %w", err)
	}
	conn, err := serverConn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		f.Close()
		return nil, err
	}
	d := &Device{
		path: path, index: n, major: major, minor: minor,
		f: f, conn: conn,
		doitDone: make(chan struct{}),
		done:     make(chan struct{}),
	}
	setup := make(chan error, 1)
	go d.run(fds[1], size, opt.BlockSize, setup)
	if err := <-setup; err != nil {
		<-d.doitDone // run has released the device
		conn.Close()
		if errors.Is(err, unix.EBUSY) {
			return nil, errTaken
		}
		return nil, fmt.Errorf("nbd: set up %s: %w", path, err)
	}
	servDone := make(chan struct{})
	go func() {
		d.servErr = serve(conn, size, b, opt)
		close(servDone)
	}()
	go func() {
		<-d.doitDone
		<-servDone
		close(d.done)
	}()
	if err := d.waitReady(ctx, size); err != nil {
		d.Close()
		if errors.Is(err, unix.EBUSY) {
			return nil, errTaken
		}
		return nil, err
	}
	limitRequests(n)
	return d, nil
}

// limitRequests lowers device n's max_sectors_kb to maxPooledBuf, so
// the kernel splits larger reads and a request's buffer stays small
// (server). Best effort: a kernel that refuses keeps its own limit
// (32 MiB), which the server still serves, at a higher memory cost.
func limitRequests(n int) {
	p := filepath.Join(sysBlock, "nbd"+strconv.Itoa(n), "queue", "max_sectors_kb")
	cur, err := readUint(p)
	if err != nil || cur <= maxPooledBuf>>10 {
		return
	}
	_ = os.WriteFile(p, []byte(strconv.Itoa(maxPooledBuf>>10)), 0)
}

// serverConn wraps the server's end of the socketpair as a net.Conn (on
// the runtime poller).
func serverConn(fd int) (net.Conn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nbd: socket: %w", err)
	}
	sf := os.NewFile(uintptr(fd), "nbd-server")
	defer sf.Close()
	c, err := net.FileConn(sf)
	if err != nil {
		return nil, fmt.Errorf("nbd: socket: %w", err)
	}
	return c, nil
}

// run configures the device and runs NBD_DO_IT, all on one locked OS
// thread: NBD_SET_SOCK remembers the setting-up thread and answers EBUSY
// to any other, which is also how a racing process is told off. The
// thread is never unlocked, so it exits with its blocked signal mask.
// setup gets the configuration's result; doitDone is closed once the
// device is released.
func (d *Device) run(kfd int, size int64, bs uint32, setup chan<- error) {
	defer close(d.doitDone)
	runtime.LockOSThread()
	fd := d.f.Fd()
	release := func() {
		d.fmu.Lock()
		d.f.Close()
		d.f = nil
		d.fmu.Unlock()
	}
	if err := blockSignals(); err != nil {
		unix.Close(kfd)
		release()
		setup <- fmt.Errorf("block signals: %w", err)
		return
	}
	// No NBD_CLEAR_SOCK first: on a device another process is setting
	// up it would tear down that process's socket. A fresh opener of a
	// free device has no sockets to clear.
	err := ioctl(fd, ioctlSetSock, uintptr(kfd))
	// The kernel holds its own reference to the socket now.
	unix.Close(kfd)
	if err != nil {
		release()
		setup <- fmt.Errorf("NBD_SET_SOCK: %w", err)
		return
	}
	for _, c := range []struct {
		name     string
		req, arg uintptr
	}{
		{"NBD_SET_BLKSIZE", ioctlSetBlksize, uintptr(bs)},
		{"NBD_SET_SIZE", ioctlSetSize, uintptr(size)},
		// Read-only: the kernel refuses writes itself (set_disk_ro).
		// No NBD_FLAG_SEND_FLUSH: nothing is ever dirty, so the queue
		// needs no write cache and the kernel sends no flushes (the
		// server still answers one).
		{"NBD_SET_FLAGS", ioctlSetFlags, flagHasFlags | flagReadOnly},
		// 0: no request timeout; a slow backend (S3) must stall the
		// reader, not fail it.
		{"NBD_SET_TIMEOUT", ioctlSetTimeout, 0},
	} {
		if err = ioctl(fd, c.req, c.arg); err != nil {
			err = fmt.Errorf("%s: %w", c.name, err)
			break
		}
	}
	if err != nil {
		_ = ioctl(fd, ioctlClearSock, 0)
		release()
		setup <- err
		return
	}
	setup <- nil
	err = ioctl(fd, ioctlDoIt, 0)
	// Drops the kernel's socket (the server sees EOF) and fails anything
	// still queued.
	_ = ioctl(fd, ioctlClearSock, 0)
	d.doitErr = err
	release()
}

// waitReady waits until the kernel shows the device connected with the
// right size, or NBD_DO_IT failed.
func (d *Device) waitReady(ctx context.Context, size int64) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if connected(d.index) {
			if got, err := sizeOf(d.index); err == nil && got == size {
				return nil
			}
		}
		select {
		case <-d.doitDone:
			if d.doitErr != nil {
				return fmt.Errorf("nbd: %s: NBD_DO_IT: %w", d.path, d.doitErr)
			}
			return fmt.Errorf("nbd: %s: connection ended before the device was ready", d.path)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			got, _ := sizeOf(d.index)
			return fmt.Errorf("nbd: %s: the kernel shows %d bytes, not %d, after %s", d.path, got, size, readyTimeout)
		case <-tick.C:
		}
	}
}
