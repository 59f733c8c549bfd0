package extract

import (
	"errors"
	"io"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Low-level operations on the last component of a path, always relative to
// the fd of its (already resolved) parent directory and never following a
// symlink in that last component.

// lstatAt is fstatat with AT_SYMLINK_NOFOLLOW; exists is false on ENOENT.
func lstatAt(dirfd int, name string) (st unix.Stat_t, exists bool, err error) {
	err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// clearForNonDir makes room for a non-directory at name: an existing
// non-directory is unlinked (never opened, so a hardlink sharing its inode
// is left intact), an existing directory is removed with its contents,
// or with keepFull only if it is empty (errDirNotEmpty otherwise).
func clearForNonDir(dirfd int, name string, keepFull bool) error {
	st, exists, err := lstatAt(dirfd, name)
	if err != nil || !exists {
		return err
	}
	if !isDir(&st) {
		return unix.Unlinkat(dirfd, name, 0)
	}
	if !keepFull {
		return removeAllAt(dirfd, name)
	}
	err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return errDirNotEmpty
	}
	return err
}

// removeAllAt removes name (relative to dirfd) and, for a directory, all it
// contains, descending by fds opened with O_NOFOLLOW so a symlink inside
// is removed as a symlink and never entered.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := removeChildren(fd); err != nil {
		unix.Close(fd)
		return err
	}
	unix.Close(fd)
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// removeChildren empties the directory open at fd.
func removeChildren(fd int) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := removeAllAt(fd, n); err != nil {
			return err
		}
	}
	return nil
}

// readDirNames lists a directory without consuming the caller's fd.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// chmodAt sets the mode of name without following it: fchmodat2 with
// AT_SYMLINK_NOFOLLOW (Linux >= 6.6), else through an O_PATH fd and its
// /proc/self/fd link, which names that exact inode.
func chmodAt(dirfd int, name string, mode uint32) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(mode), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	if errno == 0 {
		return nil
	}
	if errno != unix.ENOSYS && errno != unix.EINVAL && errno != unix.EPERM {
		return errno
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil // symlinks have no mode of their own on Linux
	}
	return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
}

// futimens sets the times of the file open at fd (utimensat with a NULL
// path, which x/sys does not expose).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// fdWriter writes to a file descriptor it owns, retrying short writes and
// EINTR.
type fdWriter struct {
	fd     int
	closed bool
}

func (w *fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Write(w.fd, p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			return n, io.ErrShortWrite
		}
		n += k
	}
	return n, nil
}

// close closes the fd once; later calls return nil.
func (w *fdWriter) close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return unix.Close(w.fd)
}
