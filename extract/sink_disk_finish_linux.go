package extract

import (
	"bytes"
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// finish sets each directory's final mode and times, children before
// parents. It walks down from the root through the directories on the
// way to one with metadata (by inode, from the directory entries
// themselves, so neither names nor symlinks are involved) and applies
// the metadata of those it meets; one that was since replaced or removed
// is not met.
func (s *diskSink) finish() error {
	s.closeParent()
	fd, err := unix.Openat(s.r.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return opErr("open", "root", err)
	}
	defer unix.Close(fd)
	s.walkBuf = make([]byte, 8<<10)
	return s.finishDir(fd, ".", 0)
}

// finishDir applies metadata under the directory open at fd, then to it.
// name is for errors only.
func (s *diskSink) finishDir(fd int, name string, depth int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return opErr("stat", name, err)
	}
	here := inode{st.Dev, st.Ino}
	if here == s.rootIno || hasKey(s.onPath, here) {
		if depth > MaxPathLen {
			return opErr("walk", name, unix.ELOOP)
		}
		if err := s.finishChildren(fd, st.Dev, depth); err != nil {
			return err
		}
	}
	m, ok := s.dirs[here]
	if !ok {
		return nil
	}
	if err := unix.Fchmod(fd, m.mode); err != nil {
		return opErr("chmod", name, err)
	}
	ts := m.times
	if err := futimens(fd, &ts); err != nil {
		return opErr("set times of", name, err)
	}
	return nil
}

func (s *diskSink) finishChildren(fd int, dev uint64, depth int) error {
	buf := make([]byte, 8<<10) // one per level: the walk recurses mid-listing
	if depth == 0 {
		buf = s.walkBuf
	}
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return opErr("list", "directory", err)
		}
		if n <= 0 {
			return nil
		}
		for off := 0; off < n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
			ino := binary.NativeEndian.Uint64(buf[off:])
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			typ := buf[off+18]
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			off += reclen
			if (typ != unix.DT_DIR && typ != unix.DT_UNKNOWN) || string(name) == "." || string(name) == ".." {
				continue
			}
			in := inode{dev, ino}
			if !hasKey(s.onPath, in) && !hasKey(s.dirs, in) {
				continue
			}
			cfd, err := unix.Openat(fd, string(name), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOENT) {
					continue
				}
				return opErr("open directory", string(name), err)
			}
			err = s.finishDir(cfd, string(name), depth+1)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		}
	}
}

func hasKey[V any](m map[inode]V, k inode) bool {
	_, ok := m[k]
	return ok
}
