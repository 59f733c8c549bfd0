package dmpool

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// kindError is a sentinel with a fixed message that also matches an
// errdefs kind, so callers can test either errors.Is(err, ErrPoolFull)
// or errdefs.IsResourceExhausted(err).
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

var (
	// ErrPoolMissing: the pool device or its backing storage is gone.
	ErrPoolMissing error = &kindError{"devicemapper pool missing", errdefs.ErrNotFound}
	// ErrPoolFull: no data (or metadata) space is left in the pool.
	ErrPoolFull error = &kindError{"devicemapper pool is full, cannot create device", errdefs.ErrResourceExhausted}
	// ErrPoolReadOnly: the kernel switched the pool to read-only or it
	// needs thin_check; nothing can be created until an operator acts.
	ErrPoolReadOnly error = &kindError{"devicemapper pool is read-only (needs thin_check/repair)", errdefs.ErrFailedPrecondition}
	// ErrPoolFailed: the pool target reports "Fail".
	ErrPoolFailed error = &kindError{"devicemapper pool has failed", errdefs.ErrUnavailable}
	// ErrPoolSuspended: a table reload failed and the pool could not be
	// resumed on either table; every thin device's I/O waits until an
	// operator resumes it.
	ErrPoolSuspended error = &kindError{"devicemapper pool is left suspended", errdefs.ErrUnavailable}
	// ErrDeviceSuspended: a thin device's table reload failed and the
	// device could not be resumed on either table; its I/O waits until an
	// operator resumes it.
	ErrDeviceSuspended error = &kindError{"device-mapper device is left suspended", errdefs.ErrUnavailable}
	// ErrTableReload: a reload of the pool's table failed; the pool runs on
	// its old table (the error says so) unless it also wraps ErrPoolSuspended.
	ErrTableReload error = &kindError{"devicemapper pool table reload failed", errdefs.ErrFailedPrecondition}
	// ErrDeviceExists: the thin id (or dm name) is already taken.
	ErrDeviceExists error = &kindError{"device already exists", errdefs.ErrAlreadyExists}
	// ErrDeviceBusy: the device is open (mounted) and cannot be removed.
	ErrDeviceBusy error = &kindError{"device is busy", errdefs.ErrFailedPrecondition}
	// ErrNotFound: no such thin id or device.
	ErrNotFound error = &kindError{"device not found", errdefs.ErrNotFound}
	// ErrMismatch: an existing pool does not use the configured storage.
	ErrMismatch error = &kindError{"devicemapper pool does not match its configuration", errdefs.ErrFailedPrecondition}
	// ErrNoDeviceMapper: /dev/mapper/control cannot be opened; the
	// kernel has no device-mapper or we are not root.
	ErrNoDeviceMapper error = &kindError{"device-mapper is not available", errdefs.ErrUnavailable}
)

// mapMessageErr turns the errno of a thin-pool message into a typed
// error naming pool and what was asked.
func mapMessageErr(pool, what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("pool %q: %s: %w: %w", pool, what, ErrDeviceExists, err)
	case errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("pool %q: %s: %w: %w", pool, what, ErrPoolFull, err)
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("pool %q: %s: %w: %w", pool, what, ErrNotFound, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("pool %q: %s: %w: %w", pool, what, ErrDeviceBusy, err)
	case errors.Is(err, unix.ENXIO):
		return fmt.Errorf("pool %q: %s: %w: %w", pool, what, ErrPoolMissing, err)
	case errors.Is(err, unix.EOPNOTSUPP):
		// pool_message refuses every message in read-only/fail mode.
		return fmt.Errorf("pool %q: %s: %w: %w", pool, what, ErrPoolReadOnly, err)
	}
	return fmt.Errorf("pool %q: %s: %w", pool, what, err)
}
