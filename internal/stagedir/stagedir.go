// Package stagedir builds a directory tree where no one looks for it and
// puts it at its destination only once it is complete, so a failed build
// leaves nothing behind and the destination never holds a half tree
// (except a mount point, which is filled in place and emptied on failure).
package stagedir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// ErrNotEmpty is returned by New for a destination that holds entries:
// a staged tree would replace them.
var ErrNotEmpty = errors.New("directory is not empty")

// lostFound is the one entry a destination may hold and still count as
// empty: mkfs.ext4 makes it on every new filesystem.
const lostFound = "lost+found"

// Stage is a tree being built for Dest.
type Stage struct {
	dest string
	dir  string
	// inPlace is set when dest is a mount point, which cannot be renamed
	// over: the tree is then built in dest itself, and Abort empties it
	// and gives it back its mode and owner, old.
	inPlace bool
	old     os.FileInfo
	// replace is the empty directory New found at dest, open O_PATH,
	// which Commit may replace (nil: dest did not exist, and Commit
	// replaces nothing). Held open, its inode cannot be freed and its
	// number given to a directory made in its place.
	replace *os.File
}

// New prepares to build a tree for dest, which must be a new path in an
// existing directory, or an empty directory (lost+found aside on the root
// of a filesystem). The tree is built in a fresh directory beside dest
// (".<name>.extract-<random>", made with a name no one could prepare)
// that Commit renames to dest. It has the mode and owner of an existing
// dest (0755 for a new one) unless the tree's root entry sets them. A
// dest that is a mount point, or that we cannot build beside, cannot be
// renamed over: the tree is then built in it directly, and Abort removes
// what was written.
func New(dest string) (*Stage, error) {
	if real, err := filepath.EvalSymlinks(dest); err == nil {
		dest = real
	}
	dest = filepath.Clean(dest)
	fi, err := os.Stat(dest)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return stageBeside(dest, nil)
	case err != nil:
		return nil, err
	case !fi.IsDir():
		return nil, fmt.Errorf("%s: not a directory", dest)
	}
	mounted, err := mountinfo.Mounted(dest)
	if err != nil {
		return nil, err
	}
	if err := checkEmpty(dest, mounted); err != nil {
		return nil, err
	}
	if mounted {
		return &Stage{dest: dest, dir: dest, inPlace: true, old: fi}, nil
	}
	s, err := stageBeside(dest, fi)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		// We may write to dest but not beside it, or cannot give a new
		// directory its owner: build in place instead.
		return &Stage{dest: dest, dir: dest, inPlace: true, old: fi}, nil
	}
	return s, err
}

func stageBeside(dest string, old os.FileInfo) (*Stage, error) {
	parent, base := filepath.Split(dest)
	dir, err := os.MkdirTemp(parent, "."+base+".extract-")
	if err != nil {
		return nil, err
	}
	mode := os.FileMode(0o755)
	if old != nil {
		mode = modeOf(old)
		if st, ok := old.Sys().(*syscall.Stat_t); ok {
			if err := os.Lchown(dir, int(st.Uid), int(st.Gid)); err != nil {
				os.Remove(dir)
				return nil, err
			}
		}
	}
	// The mode dest has, or a new directory's; the tree's root entry
	// (an archive's "./") may change it as it would have dest's.
	if err := os.Chmod(dir, mode); err != nil {
		os.Remove(dir)
		return nil, err
	}
	st := &Stage{dest: dest, dir: dir}
	if old != nil {
		fd, err := unix.Open(dest, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil && !sameInode(fd, old) {
			unix.Close(fd)
			err = fmt.Errorf("%s changed while it was checked", dest)
		}
		if err != nil {
			os.Remove(dir)
			return nil, err
		}
		st.replace = os.NewFile(uintptr(fd), dest)
	}
	return st, nil
}

// sameInode reports whether fd is the file fi describes.
func sameInode(fd int, fi os.FileInfo) bool {
	var st unix.Stat_t
	sys, ok := fi.Sys().(*syscall.Stat_t)
	return ok && unix.Fstat(fd, &st) == nil && st.Dev == uint64(sys.Dev) && st.Ino == uint64(sys.Ino)
}

func (s *Stage) release() {
	if s.replace != nil {
		s.replace.Close()
		s.replace = nil
	}
}

// checkEmpty fails with ErrNotEmpty if dir holds anything but, on a
// filesystem's root, an empty lost+found.
func checkEmpty(dir string, fsRoot bool) error {
	names, err := readNames(dir, 2)
	if err != nil {
		return err
	}
	for _, n := range names {
		if n == lostFound && fsRoot {
			if in, err := readNames(filepath.Join(dir, n), 1); err == nil && len(in) == 0 {
				continue
			}
		}
		return fmt.Errorf("%s: %w (it holds %s)", dir, ErrNotEmpty, n)
	}
	return nil
}

// readNames returns up to n names in dir (all for n < 0).
func readNames(dir string, n int) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(n)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return names, nil
}

// Dir is where to build the tree.
func (s *Stage) Dir() string { return s.dir }

// Dest is the destination, symlinks resolved.
func (s *Stage) Dest() string { return s.dest }

// Commit puts the complete tree at Dest. On failure the tree stays in Dir
// and the error says so.
//
// What is at Dest is never replaced unless it is the very directory New
// found empty there: a Dest that was new is taken with
// renameat2(RENAME_NOREPLACE), so one planted since makes Commit fail
// (plain rename(2) would replace an empty directory); an empty Dest is
// swapped with the tree (RENAME_EXCHANGE), and what comes out is removed
// only if it is that same directory and still empty, else swapped back.
func (s *Stage) Commit() error {
	if s.inPlace {
		return nil
	}
	defer s.release()
	fail := func(err error) error {
		return fmt.Errorf("moving the complete tree from %s to %s: %w (it is left in %s)", s.dir, s.dest, err, s.dir)
	}
	if s.replace == nil {
		err := renameat2(s.dir, s.dest, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			// A filesystem without the flag (NFS, some FUSE): rename(2)
			// of a directory can at worst replace an empty directory.
			err = unix.Rename(s.dir, s.dest)
		}
		if err != nil {
			return fail(err)
		}
		return nil
	}
	err := renameat2(s.dir, s.dest, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if fi, lerr := os.Lstat(s.dest); lerr != nil || !sameInode(int(s.replace.Fd()), fi) {
			return fail(fmt.Errorf("%s is no longer the empty directory it was", s.dest))
		}
		err = unix.Rename(s.dir, s.dest) // fails on a non-empty directory
		if err != nil {
			return fail(err)
		}
		return nil
	}
	if err != nil {
		return fail(err)
	}
	// The tree is at dest; what was there is at s.dir.
	out, err := os.Lstat(s.dir)
	if err == nil && !sameInode(int(s.replace.Fd()), out) {
		err = fmt.Errorf("%s is no longer the empty directory it was", s.dest)
	}
	if err == nil {
		err = unix.Rmdir(s.dir) // ENOTEMPTY if it was filled since
	}
	if err == nil {
		return nil
	}
	if xerr := renameat2(s.dir, s.dest, unix.RENAME_EXCHANGE); xerr != nil {
		return fmt.Errorf("moving the complete tree from %s to %s: %v; the tree is now at %s and what was there at %s: %w",
			s.dir, s.dest, err, s.dest, s.dir, xerr)
	}
	return fail(err)
}

func renameat2(from, to string, flags uint) error {
	return unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, flags)
}

// Abort removes what was built: the staging directory, or for a tree
// built in place everything in Dest but lost+found. Symlinks in the tree
// are removed, never followed. The error names what could not be removed.
func (s *Stage) Abort() error {
	s.release()
	if !s.inPlace {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("removing the partial tree %s: %w", s.dir, err)
		}
		return nil
	}
	if err := empty(s.dest); err != nil {
		return fmt.Errorf("emptying %s: %w", s.dest, err)
	}
	// The tree's root entry may have changed them.
	if st, ok := s.old.Sys().(*syscall.Stat_t); ok {
		os.Lchown(s.dest, int(st.Uid), int(st.Gid))
	}
	return os.Chmod(s.dest, modeOf(s.old))
}

// empty removes everything in dir but an empty lost+found directory.
func empty(dir string) error {
	names, err := readNames(dir, -1)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if fi, err := os.Lstat(p); err == nil && n == lostFound && fi.IsDir() {
			in, err := readNames(p, -1)
			if err != nil {
				return err
			}
			for _, m := range in {
				if err := os.RemoveAll(filepath.Join(p, m)); err != nil {
					return err
				}
			}
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// modeOf is what chmod(2) takes back for fi.
func modeOf(fi os.FileInfo) os.FileMode {
	return fi.Mode().Perm() | fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)
}
