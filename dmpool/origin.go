package dmpool

import (
	"context"
	"fmt"
	"os"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// External origins (thin-provisioning.rst, "External snapshots"): a thin
// device whose table names a read-only origin device reads unprovisioned
// blocks from it. A base image's blank thin device and its snapshots are
// activated with the same origin (an NBD device, or a read-only loop over
// a local cache file) and the origin is switched later while they run.

// OriginDevice returns the "major:minor" of external origin path, the
// form the kernel shows in tables (ActiveDevice.Origin). A path that is
// not a block device (stat, S_IFBLK) is ErrInvalidArgument naming it.
func OriginDevice(path string) (string, error) {
	b, err := blockDev(path)
	if err != nil {
		if !errdefs.IsInvalidArgument(err) {
			err = fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		}
		return "", fmt.Errorf("external origin %s: %w", path, err)
	}
	return devString(b.major, b.minor), nil
}

// OriginSize returns the size in bytes of block device path as the
// kernel has it now (BLKGETSIZE64): what a table over it reads before
// zeros. A path that is not a block device is ErrInvalidArgument naming
// it. Whoever puts a device in a table as a known image's origin checks
// this against the image's size: a device that is not (or no longer)
// the image, such as a dead nbd device cleared to 0 bytes, mostly shows
// another size.
func OriginSize(path string) (uint64, error) {
	if _, err := OriginDevice(path); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("external origin %s: %w", path, err)
	}
	defer f.Close()
	var n uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); e != 0 {
		return 0, fmt.Errorf("external origin %s: BLKGETSIZE64: %w", path, e)
	}
	return n, nil
}

// thinOriginOps are the ioctls of an origin reload. The resume that swaps
// the new table in suspends first without freezing a file system mounted
// on the device: the origin's content is the same before and after, so
// nothing needs the file system consistent on disk at the swap, and a
// freeze syncs dirty pages, which on a thin device with an external
// origin can need origin reads (copying the rest of a partly written
// block), in an uninterruptible wait. The suspend still waits for every
// bio in flight (it flushes, no DM_NOFLUSH_FLAG).
var thinOriginOps = tableOps{load: LoadTable, resume: resumeSkipLockfs, clear: ClearTable, info: GetDeviceInfo, table: Table}

// ReloadOrigin switches active thin device name to origin (a block device
// path) with suspend (flushing), load, resume; the same id and length. On
// any failure the old table stays live and the device is resumed (never
// left suspended); an inactive table left behind is cleared. The rare
// case where the kernel refuses every resume is ErrDeviceSuspended.
//
// The table is loaded before the suspend (the kernel's resume of a
// loaded table suspends, swaps and resumes), so a table the kernel
// refuses (a bad origin) never suspends the device at all.
//
// The suspend waits for the device's bios in flight, so it lasts as long
// as the slowest of them: reads of the old origin, including those of
// kcopyd copying from it. An origin that fails its I/O completes it
// (with EIO) and does not hold the suspend; an origin that hangs (an NBD
// device whose server is gone and which has no timeout) holds it, and
// with it every new I/O to the device, until that I/O ends. The ioctl
// layer cannot bound that wait: the kernel waits interruptibly, but since
// dm's EINTR became ERESTARTSYS (2024, backported to stable kernels) a
// signal handled with SA_RESTART, which is how Go installs its handlers,
// restarts the ioctl; and abandoning the ioctl would leave the device
// suspending anyway, with nobody to resume it. Whoever owns the
// origin must bound its I/O (nbd's timeout) before switching away from it.
func (p *Pool) ReloadOrigin(ctx context.Context, name string, origin string) error {
	if err := checkName(name); err != nil {
		return err
	}
	what := fmt.Sprintf("reload origin of %q to %s", name, origin)
	if origin == "" {
		// Dropping the origin would turn every unprovisioned block into
		// zeros under a running container.
		return fmt.Errorf("pool %q: %s: an origin is required: %w", p.cfg.Name, what, errdefs.ErrInvalidArgument)
	}
	originDev, err := OriginDevice(origin)
	if err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	// CreateSnapshot suspends and resumes active devices of its origin
	// id; the resume here must not end one of its suspends early.
	p.snapMu.Lock()
	defer p.snapMu.Unlock()

	live, err := Table(name)
	if isErrno(err, unix.ENXIO) {
		return fmt.Errorf("pool %q: %s: %w: %w", p.cfg.Name, what, ErrNotFound, err)
	}
	if err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	if len(live) != 1 || live[0].Type != "thin" || !p.owns(live[0]) {
		return fmt.Errorf("pool %q: %s: not an active thin device of the pool (table %q): %w",
			p.cfg.Name, what, tableString(live), errdefs.ErrInvalidArgument)
	}
	tt, err := parseThinTable(live[0].Params)
	if err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	if tt.Origin == originDev {
		return nil // already on that device
	}
	tt.Origin = originDev
	want := Target{Start: live[0].Start, Length: live[0].Length, Type: "thin", Params: tt.String()}
	k := reloadKind{noun: "thin device", suspended: ErrDeviceSuspended, waits: "its I/O waits",
		isNew: func(ts []Target) (bool, error) { return len(ts) == 1 && sameThin(ts[0], want), nil }}
	if err := reloadTable(ctx, thinOriginOps, name, live, []Target{want}, k); err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	return nil
}
