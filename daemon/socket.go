package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// maxSocketPath is the longest path bind(2) takes: sun_path is 108 bytes
// with its terminating NUL.
const maxSocketPath = 107

// testHookBound, when set, is called with the path the socket was just
// bound at, before it is chmod'ed and moved into place.
var testHookBound func(bound string)

// listen opens a unix socket at path with mode.
//
// The socket is never reachable with any other mode, even for an instant:
// bind(2) creates it with the process's umask, so it is bound inside a
// fresh directory of mode 0700 beside path, chmod'ed there and only then
// renamed to path, which replaces a stale socket atomically. Only called
// with the database lock held, so a socket left at path cannot belong to
// a live daemon of this root_dir; anything else there (a file, a symlink,
// a socket something still answers on) is refused, never followed or
// removed.
func listen(path string, mode os.FileMode) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stale, err := checkStaleSocket(path)
	if err != nil {
		return nil, err
	}
	if stale != nil {
		defer stale.Close()
	}
	// MkdirTemp makes the directory with mode 0700 and a name no other
	// process can have prepared.
	private, err := os.MkdirTemp(dir, ".sock-")
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	defer os.Remove(private)
	bound := filepath.Join(private, "s")
	if len(bound) > maxSocketPath {
		return nil, fmt.Errorf("socket %s: the directory is too deep to bind in (%s is %d bytes, at most %d): use a shorter path",
			path, bound, len(bound), maxSocketPath)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	// Go would unlink the bound name on Close; the socket lives at path.
	l.SetUnlinkOnClose(false)
	if testHookBound != nil {
		testHookBound(bound)
	}
	own, oerr := os.Lstat(bound)
	fi, err := placeSocket(bound, path, mode, stale)
	if err != nil {
		l.Close()
		// A failed swap-back may have left someone else's file at bound:
		// remove only our own socket.
		if got, gerr := os.Lstat(bound); oerr == nil && gerr == nil && os.SameFile(got, own) {
			os.Remove(bound)
		}
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &socketListener{UnixListener: l, path: path, fi: fi}, nil
}

// placeSocket moves the socket bound at bound to path. It never replaces
// anything but the stale socket checkStaleSocket found (open as stale;
// nil if path was free): something put at path since (the check and the
// rename are two steps) is kept and placeSocket fails. A free path is
// taken with renameat2(RENAME_NOREPLACE) (or link(2), which never
// replaces either, where the filesystem lacks the flag); a stale socket
// is swapped with the new one (RENAME_EXCHANGE) and removed only if it is
// the very one checked (held open, so its inode number cannot be reused),
// else swapped back.
func placeSocket(bound, path string, mode os.FileMode, stale *os.File) (os.FileInfo, error) {
	if err := os.Chmod(bound, mode); err != nil {
		return nil, err
	}
	fi, err := os.Lstat(bound)
	if err != nil {
		return nil, err
	}
	changed := fmt.Errorf("something was put at %s while the socket was being made; not replacing it: check who else writes to %s", path, filepath.Dir(path))
	if stale == nil {
		err := unix.Renameat2(unix.AT_FDCWD, bound, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			if err = os.Link(bound, path); err == nil {
				os.Remove(bound)
			}
		}
		if errors.Is(err, os.ErrExist) {
			return nil, changed
		}
		if err != nil {
			return nil, err
		}
		return fi, nil
	}
	want, err := stale.Stat()
	if err != nil {
		return nil, err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, bound, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			// No RENAME_EXCHANGE here: rename(2), after checking again
			// that the stale socket is still the one at path.
			if got, lerr := os.Lstat(path); lerr != nil || !os.SameFile(got, want) {
				return nil, changed
			}
			if err := os.Rename(bound, path); err != nil {
				return nil, err
			}
			return fi, nil
		}
		return nil, err
	}
	// The new socket is at path; what was there is at bound.
	if got, err := os.Lstat(bound); err == nil && os.SameFile(got, want) {
		os.Remove(bound)
		return fi, nil
	}
	if err := unix.Renameat2(unix.AT_FDCWD, bound, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE); err != nil {
		return nil, fmt.Errorf("%w; and putting it back failed, so it is now at %s: %v", changed, bound, err)
	}
	return nil, changed
}

// checkStaleSocket fails unless path is free or holds a socket nothing
// accepts on (left by a daemon that died), which placeSocket replaces. A
// stale socket is returned open (O_PATH), nil for a free path.
func checkStaleSocket(path string) (*os.File, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode().Type() != os.ModeSocket {
		what := "a " + fileKind(fi)
		if fi.Mode()&os.ModeSymlink != 0 {
			if target, err := os.Readlink(path); err == nil {
				what = "a symlink to " + target
			}
		}
		return nil, fmt.Errorf("socket %s: %s is there, not a socket; not replacing it: remove it if it is stale, or fix the address in the config", path, what)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another process is serving on it (a daemon of another root_dir with the same address?)", path)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if got, err := f.Stat(); err != nil || !os.SameFile(got, fi) {
		f.Close()
		return nil, fmt.Errorf("socket %s: it changed while it was checked; not replacing it", path)
	}
	return f, nil
}

func fileKind(fi os.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == 0:
		return "regular file"
	case t&os.ModeDir != 0:
		return "directory"
	case t&os.ModeSymlink != 0:
		return "symlink"
	case t&os.ModeNamedPipe != 0:
		return "FIFO"
	case t&os.ModeDevice != 0:
		return "device node"
	}
	return "file of mode " + fi.Mode().String()
}

// socketListener serves the socket moved to path and removes it on Close,
// unless something else has replaced it there since.
type socketListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
}

func (l *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if fi, lerr := os.Lstat(l.path); lerr == nil && os.SameFile(fi, l.fi) {
		os.Remove(l.path)
	}
	return err
}
