// Package loopdev attaches regular files to loop block devices with the
// LOOP_CONFIGURE ioctl, reusing a loop that is already bound to the same
// file so a restarted process never attaches a file twice.
//
// There is no udev on the target machines: when a /dev/loopN node is
// missing it is created with mknod.
package loopdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	controlPath = "/dev/loop-control"
	loopMajor   = 7
)

// Params control how a new loop device is configured.
type Params struct {
	// Direct asks for direct IO to the backing file (no double caching).
	// When the backing file system refuses it, the loop is set up
	// without it.
	Direct bool
	// Autoclear lets the kernel detach the loop once its last opener
	// (for a pool: the device-mapper table) closes it.
	Autoclear bool
	// ReadOnly makes a read-only loop over a backing file opened
	// read-only (a dm-thin external origin must not change).
	ReadOnly bool
}

// Device is an attached loop device.
type Device struct {
	// Path is /dev/loopN.
	Path string
	// Major and Minor identify the block device (what dm tables print).
	Major, Minor uint32
	// Reused is true when the file was already bound to this loop.
	Reused bool
	// File holds the loop open. With Autoclear the loop disappears as
	// soon as the last opener closes it, so the caller keeps File open
	// until something longer-lived (a dm table) has opened the device.
	File *os.File
}

// Close releases the handle that keeps the device alive.
func (d *Device) Close() error {
	if d == nil || d.File == nil {
		return nil
	}
	err := d.File.Close()
	d.File = nil
	return err
}

// AttachFile returns a loop device bound to the open file back,
// attaching a free one when no loop is bound to that very file (same
// device and inode; with p.ReadOnly, also read-only). Unlike Attach it
// never goes by a path again, so the file the caller opened and checked
// (without following symlinks) is the one the loop reads, even if the
// path is replaced meanwhile. back stays the caller's to close.
func AttachFile(back *os.File, p Params) (*Device, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(back.Fd()), &st); err != nil {
		return nil, fmt.Errorf("loop: stat %s: %w", back.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("loop: %s is not a regular file", back.Name())
	}
	// What the kernel shows in backing_file, for the name and the
	// search; the dev and inode decide.
	name, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", back.Fd()))
	if err != nil {
		return nil, fmt.Errorf("loop: path of %s: %w", back.Name(), err)
	}
	attachMu.Lock()
	defer attachMu.Unlock()
	if d, err := findFile(name, st, p.ReadOnly); err != nil || d != nil {
		return d, err
	}
	return attachNew(back, name, p)
}

// attachMu serialises find-or-attach within the process so two callers
// cannot attach the same file twice.
var attachMu sync.Mutex

// Attach returns a loop device bound to backingFile, attaching a free
// one when no loop is bound to it yet.
func Attach(backingFile string, p Params) (*Device, error) {
	abs, err := canonical(backingFile)
	if err != nil {
		return nil, err
	}
	attachMu.Lock()
	defer attachMu.Unlock()

	if d, err := find(abs); err != nil {
		return nil, err
	} else if d != nil {
		return d, nil
	}

	mode := os.O_RDWR
	if p.ReadOnly {
		mode = os.O_RDONLY
	}
	back, err := os.OpenFile(abs, mode, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: open backing file %s: %w", abs, err)
	}
	defer back.Close()
	return attachNew(back, abs, p)
}

// attachNew binds back to a free loop device; attachMu is held.
func attachNew(back *os.File, abs string, p Params) (*Device, error) {
	for attempt := 1; attempt <= 50; attempt++ {
		n, err := getFree()
		if err != nil {
			return nil, err
		}
		path, err := ensureNode(n)
		if err != nil {
			return nil, err
		}
		loop, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("loop: open %s: %w", path, err)
		}
		err = configure(loop, back, abs, p)
		if errors.Is(err, unix.EBUSY) {
			// Another process took this free loop between GET_FREE and
			// CONFIGURE (util-linux handles the same race this way).
			loop.Close()
			time.Sleep(time.Duration(attempt) * time.Millisecond)
			continue
		}
		if err != nil {
			loop.Close()
			return nil, fmt.Errorf("loop: attach %s to %s: %w", abs, path, err)
		}
		return &Device{Path: path, Major: loopMajor, Minor: n, File: loop}, nil
	}
	return nil, fmt.Errorf("loop: attach %s: no free loop device after retries", abs)
}

func configure(loop, back *os.File, name string, p Params) error {
	cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], name)
	if p.Autoclear {
		cfg.Info.Flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	if p.ReadOnly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	if p.Direct {
		dio := cfg
		dio.Info.Flags |= unix.LO_FLAGS_DIRECT_IO
		err := unix.IoctlLoopConfigure(int(loop.Fd()), &dio)
		if err == nil || errors.Is(err, unix.EBUSY) {
			return err
		}
		// EINVAL: the backing file system or its block size does not
		// allow direct IO. Fall back to buffered IO.
	}
	err := unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
		// Kernels before 5.8 lack LOOP_CONFIGURE.
		return legacyConfigure(loop, back, cfg.Info)
	}
	return err
}

func legacyConfigure(loop, back *os.File, info unix.LoopInfo64) error {
	if err := unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(back.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(loop.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

func getFree() (uint32, error) {
	if _, err := os.Stat(controlPath); errors.Is(err, os.ErrNotExist) {
		// misc device 10:237
		if err := unix.Mknod(controlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 237))); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("loop: create %s: %w", controlPath, err)
		}
	}
	ctrl, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("loop: open %s: %w", controlPath, err)
	}
	defer ctrl.Close()
	n, err := unix.IoctlRetInt(int(ctrl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return 0, fmt.Errorf("loop: get free loop device: %w", err)
	}
	return uint32(n), nil
}

func ensureNode(n uint32) (string, error) {
	path := fmt.Sprintf("/dev/loop%d", n)
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	if err == nil {
		return path, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("loop: stat %s: %w", path, err)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(loopMajor, n))); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("loop: create node %s: %w", path, err)
	}
	return path, nil
}

// canonical resolves symlinks so the name matches what the kernel
// reports in backing_file.
func canonical(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	r, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("loop: resolve %s: %w", p, err)
	}
	return r, nil
}

// Find returns the loop device already bound to backingFile, or nil.
// The returned device is opened so it stays alive.
func Find(backingFile string) (*Device, error) {
	abs, err := canonical(backingFile)
	if err != nil {
		return nil, err
	}
	attachMu.Lock()
	defer attachMu.Unlock()
	return find(abs)
}

func find(abs string) (*Device, error) {
	var want unix.Stat_t
	if err := unix.Stat(abs, &want); err != nil {
		return nil, fmt.Errorf("loop: stat %s: %w", abs, err)
	}
	return findFile(abs, want, false)
}

// findFile returns the loop bound to the file abs names whose device and
// inode are want's (read-only too if readOnly), or nil.
func findFile(abs string, want unix.Stat_t, readOnly bool) (*Device, error) {
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, fmt.Errorf("loop: list /sys/block: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
		if err != nil || strings.TrimSpace(string(b)) != abs {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimPrefix(name, "loop"), 10, 32)
		if err != nil {
			continue
		}
		path, err := ensureNode(uint32(n))
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue // detached in the meantime
		}
		// The path matched; make sure it is the same file (device and
		// inode) and not one that was replaced under the same name or
		// lives on another file system.
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		if err != nil || info.Inode != want.Ino || info.Device != uint64(want.Dev) ||
			(readOnly && info.Flags&unix.LO_FLAGS_READ_ONLY == 0) {
			f.Close()
			continue
		}
		return &Device{Path: path, Major: loopMajor, Minor: uint32(n), Reused: true, File: f}, nil
	}
	return nil, nil
}

// BackingFile returns the file behind the loop device major:minor, or ""
// when the device is not a bound loop.
func BackingFile(major, minor uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/backing_file", major, minor))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SameFile reports whether the loop device major:minor is bound to
// backingFile.
func SameFile(major, minor uint32, backingFile string) bool {
	abs, err := canonical(backingFile)
	if err != nil {
		return false
	}
	return BackingFile(major, minor) == abs
}

// Detach unbinds the loop device. On a device that is still open the
// kernel turns this into autoclear: it detaches on last close.
func Detach(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("loop: open %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("loop: detach %s: %w", path, err)
	}
	return nil
}
