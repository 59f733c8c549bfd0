package extract

import (
	"errors"

	"golang.org/x/sys/unix"
)

func (s *diskSink) whiteout(e *entry, dir, name string) error {
	s.forget()
	fd, err := s.r.openDir(dir, false)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil // nothing below to hide
		}
		return opErr("resolve whiteout directory of", e.name, err)
	}
	defer unix.Close(fd)
	if err := removeAllAt(fd, name); err != nil {
		return opErr("apply whiteout", e.name, err)
	}
	return nil
}

func (s *diskSink) opaque(e *entry, dir string) error {
	s.forget()
	fd, err := s.r.openDir(dir, false)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil
		}
		return opErr("resolve opaque directory of", e.name, err)
	}
	defer unix.Close(fd)
	var h pathHash
	components(dir, func(c string) bool { h = s.h.chain(h, c); return true })
	if err := s.emptyKeepingWritten(fd, h); err != nil {
		return opErr("apply opaque whiteout", e.name, err)
	}
	return nil
}

// emptyKeepingWritten removes everything in the directory open at fd
// (whose cleaned name hashes to dir) except what this layer wrote;
// directories this layer wrote are descended into, since what the lower
// layers had in them goes too.
func (s *diskSink) emptyKeepingWritten(fd int, dir pathHash) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		child := s.h.chain(dir, n)
		if _, ok := s.written[child]; !ok {
			if err := removeAllAt(fd, n); err != nil {
				return err
			}
			continue
		}
		st, exists, err := lstatAt(fd, n)
		if err != nil {
			return err
		}
		if !exists || !isDir(&st) {
			continue
		}
		cfd, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = s.emptyKeepingWritten(cfd, child)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}
