package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
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
	if err := checkStaleSocket(path); err != nil {
		return nil, err
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
	fi, err := placeSocket(bound, path, mode)
	if err != nil {
		l.Close()
		os.Remove(bound)
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &socketListener{UnixListener: l, path: path, fi: fi}, nil
}

func placeSocket(bound, path string, mode os.FileMode) (os.FileInfo, error) {
	if err := os.Chmod(bound, mode); err != nil {
		return nil, err
	}
	fi, err := os.Lstat(bound)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(bound, path); err != nil {
		return nil, err
	}
	return fi, nil
}

// checkStaleSocket fails unless path is free or holds a socket nothing
// accepts on (left by a daemon that died), which the rename replaces.
func checkStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		what := "a " + fileKind(fi)
		if fi.Mode()&os.ModeSymlink != 0 {
			if target, err := os.Readlink(path); err == nil {
				what = "a symlink to " + target
			}
		}
		return fmt.Errorf("socket %s: %s is there, not a socket; not replacing it: remove it if it is stale, or fix the address in the config", path, what)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another process is serving on it (a daemon of another root_dir with the same address?)", path)
	}
	return nil
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
