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
	return &Stage{dest: dest, dir: dir}, nil
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
func (s *Stage) Commit() error {
	if s.inPlace {
		return nil
	}
	// rename(2) itself: it replaces an empty directory atomically, where
	// os.Rename refuses any existing directory.
	if err := unix.Rename(s.dir, s.dest); err != nil {
		return fmt.Errorf("moving the complete tree from %s to %s: %w (it is left in %s)", s.dir, s.dest, err, s.dir)
	}
	return nil
}

// Abort removes what was built: the staging directory, or for a tree
// built in place everything in Dest but lost+found. Symlinks in the tree
// are removed, never followed. The error names what could not be removed.
func (s *Stage) Abort() error {
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
