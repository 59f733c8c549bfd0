package dmpool

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// EventWaiter wakes when any device-mapper device raises an event, or
// after a timeout, whichever comes first. It uses the pollable control
// device (DM_DEV_ARM_POLL, Linux 4.13+) rather than DM_DEV_WAIT: that
// ioctl blocks in the kernel until the device's next event and nothing but
// a signal or the device's removal ends it, so a waiter on it could keep
// the daemon from stopping. poll() takes a timeout, and Close wakes it
// through an eventfd.
//
// A wake says only that some device's event counter may have moved; the
// caller reads the pool's status (Pool.Events) to see whether it was the
// pool's. On a kernel without a pollable control device Wait is a plain
// timeout, and the caller's status read every timeout is the backstop.
type EventWaiter struct {
	ctl  *os.File // own handle: the armed event number is per open file
	wake int      // eventfd Close writes to
	poll bool     // false: the kernel cannot poll the control device

	mu     sync.Mutex
	closed bool
}

// NewEventWaiter opens a control handle for waiting.
func NewEventWaiter() (*EventWaiter, error) {
	ctl, err := os.OpenFile(controlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, controlOpenError(controlPath, err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("device-mapper event waiter: eventfd: %w", err)
	}
	w := &EventWaiter{ctl: ctl, wake: wake, poll: true}
	if err := w.arm(); err != nil {
		w.poll = false
	}
	return w, nil
}

// Pollable reports whether the kernel wakes Wait on events; false: Wait
// is a plain timeout.
func (w *EventWaiter) Pollable() bool {
	return w.poll
}

// EventWaiter returns a new waiter for the pool's events (and every other
// device's: see EventWaiter). A method so that wrappers of *Pool that
// embed it offer it too.
func (p *Pool) EventWaiter() (*EventWaiter, error) { return NewEventWaiter() }

// arm records the current global event number on the handle: poll then
// reports readable once any device raises an event after it.
func (w *EventWaiter) arm() error {
	buf := marshalHeader(headerSize+8, "", 0, 0, 0, nil)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, w.ctl.Fd(), unix.DM_DEV_ARM_POLL, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(buf)
	if errno != 0 {
		return errno
	}
	return nil
}

// ErrWaiterClosed is returned by Wait once Close was called.
var ErrWaiterClosed = errors.New("device-mapper event waiter closed")

// Wait returns when an event was raised since the previous Wait (or
// NewEventWaiter), woken true, when timeout has passed (false), or with
// ErrWaiterClosed when Close is called. The handle is armed again before
// returning, so an event between two Waits is not lost.
func (w *EventWaiter) Wait(timeout time.Duration) (woken bool, _ error) {
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return false, ErrWaiterClosed
	}
	fds := []unix.PollFd{{Fd: int32(w.wake), Events: unix.POLLIN}}
	if w.poll {
		fds = append(fds, unix.PollFd{Fd: int32(w.ctl.Fd()), Events: unix.POLLIN})
	}
	ms := int(timeout / time.Millisecond)
	for {
		_, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("device-mapper event wait: %w", err)
		}
		break
	}
	if fds[0].Revents != 0 {
		return false, ErrWaiterClosed
	}
	if w.poll && fds[1].Revents != 0 {
		if err := w.arm(); err != nil {
			return true, fmt.Errorf("device-mapper event wait: arm: %w", err)
		}
		return true, nil
	}
	return false, nil
}

// Close ends a Wait in progress (it returns ErrWaiterClosed) and every
// later one. Call it once nothing waits any more to release the handles:
// the watcher closes its waiter when its loop ends.
func (w *EventWaiter) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	var one [8]byte
	one[0] = 1
	unix.Write(w.wake, one[:])
}

// Release frees the handles; only after the last Wait returned.
func (w *EventWaiter) Release() {
	w.ctl.Close()
	unix.Close(w.wake)
}
