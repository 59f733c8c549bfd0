package extract

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

func (s *diskSink) dir(e *entry) error {
	var pfd int
	var base string
	if e.rel == "" {
		// The archive's "./" entry: its metadata goes on the root.
		var err error
		if pfd, err = s.r.openDir("", false); err != nil {
			return opErr("open root for", e.name, err)
		}
		defer unix.Close(pfd)
		base = "."
	} else {
		var err error
		if pfd, base, err = s.parent(e); err != nil {
			return err
		}
	}
	st, exists, err := lstatAt(pfd, base)
	if err != nil {
		return opErr("stat", e.name, err)
	}
	if exists && !isDir(&st) {
		// A directory replacing a file or symlink (in this archive or a
		// lower layer): the old entry goes, the symlink is not followed.
		s.forget()
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return opErr("replace", e.name, err)
		}
		exists = false
	}
	if !exists {
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return opErr("mkdir", e.name, err)
		}
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return opErr("open directory", e.name, err)
	}
	defer unix.Close(fd)
	if err := s.chown(e, func(u, g int) error { return unix.Fchown(fd, u, g) }); err != nil {
		return err
	}
	m := mode(e.hdr)
	early := m
	if s.euid != 0 {
		early |= 0o700 // so a non-root caller can fill it; fixed in finish
	}
	if err := unix.Fchmod(fd, early); err != nil {
		return opErr("chmod", e.name, err)
	}
	if err := s.xattrs(e, fd); err != nil {
		return err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return opErr("stat", e.name, err)
	}
	s.dirs[inode{st.Dev, st.Ino}] = dirMeta{mode: m, times: times(e.hdr)}
	if !exists {
		delete(s.onPath, inode{st.Dev, st.Ino}) // a reused inode: not that one's depth
	}
	if e.rel != "" {
		d, err := s.noteOnPath(pfd)
		if err == nil && d+1 > MaxPathLen {
			err = errTooDeep
		}
		if errors.Is(err, errTooDeep) {
			return tooDeepErr(e.name)
		}
		if err != nil {
			return opErr("stat parents of", e.name, err)
		}
	}
	s.mark(e.rel)
	return nil
}

func (s *diskSink) file(e *entry, r io.Reader) error {
	pfd, base, err := s.parent(e)
	if err != nil {
		return err
	}
	// Create with O_EXCL, and on EEXIST unlink and create again: never
	// open an existing path for writing, or a hardlink to it (or a
	// symlink in its place) would be written through. Trying first saves
	// an fstatat per file in the usual, empty target.
	cm := s.createMode(e.hdr)
	fd, err := createAt(pfd, base, cm)
	if errors.Is(err, unix.EEXIST) {
		s.forget()
		if err := s.clear(e, pfd, base); err != nil {
			return err
		}
		fd, err = createAt(pfd, base, cm)
	}
	if err != nil {
		return opErr("create", e.name, err)
	}
	// A bare fd, not an os.File: that would cost an fcntl and a finalizer
	// per file.
	w := &fdWriter{fd: fd}
	defer w.close()
	var n int64
	if isSparse(e.hdr) {
		n, err = copySparse(fd, r, s.buf)
	} else {
		n, err = io.CopyBuffer(w, r, s.buf)
	}
	if err != nil {
		return opErr("write", e.name, err)
	}
	if n != e.hdr.Size {
		return opErr("write", e.name, fmt.Errorf("wrote %d of %d bytes", n, e.hdr.Size))
	}
	// Each chown and chmod is a journalled inode update even when it
	// changes nothing: skip those the new file does not need (most of
	// a root filesystem is root's, 0644 or 0755), as fstat shows it
	// (umask and a setgid parent included).
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return opErr("stat", e.name, err)
	}
	chowned := int64(st.Uid) != int64(e.hdr.Uid) || int64(st.Gid) != int64(e.hdr.Gid)
	if chowned {
		if err := s.chown(e, func(u, g int) error { return unix.Fchown(fd, u, g) }); err != nil {
			return err
		}
	}
	// After a chown always: it may have cleared setuid and setgid bits.
	if chowned || st.Mode&0o7777 != mode(e.hdr) {
		if err := unix.Fchmod(fd, mode(e.hdr)); err != nil {
			return opErr("chmod", e.name, err)
		}
	}
	if err := s.xattrs(e, fd); err != nil {
		return err
	}
	ts := times(e.hdr)
	if err := futimens(fd, &ts); err != nil {
		return opErr("set times of", e.name, err)
	}
	s.mark(e.rel)
	return w.close()
}

// createAt creates name in dirfd for writing, failing with EEXIST if
// anything (a symlink included) is there.
func createAt(dirfd int, name string, mode uint32) (int, error) {
	return unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
}

// createMode is what a file is created with, while its data is written:
// never more than its final permissions, never writable by group or
// others, never setuid, setgid or sticky, and owner-only while it still
// belongs to us rather than to the owner the archive names. (The umask
// may take more away; the final chmod, when needed, restores it.)
func (s *diskSink) createMode(h *tar.Header) uint32 {
	m := mode(h) & 0o755
	if h.Uid != s.euid || h.Gid != s.egid {
		m &= 0o700
	}
	return m
}

func (s *diskSink) symlink(e *entry) error {
	pfd, base, err := s.parent(e)
	if err != nil {
		return err
	}
	// The target is stored verbatim: it is data, never followed here.
	// symlinkat never follows or replaces what is there: on EEXIST it is
	// removed and the link made again.
	err = unix.Symlinkat(e.hdr.Linkname, pfd, base)
	if errors.Is(err, unix.EEXIST) {
		s.forget()
		if err := s.clear(e, pfd, base); err != nil {
			return err
		}
		err = unix.Symlinkat(e.hdr.Linkname, pfd, base)
	}
	if err != nil {
		return opErr("symlink", e.name, err)
	}
	if err := s.chown(e, func(u, g int) error { return unix.Fchownat(pfd, base, u, g, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return err
	}
	if hasXattrs(e.hdr) {
		s.opts.warn("skipping xattrs on symlink %s", e.name)
	}
	ts := times(e.hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return opErr("set times of", e.name, err)
	}
	s.mark(e.rel)
	return nil
}

func (s *diskSink) hardlink(e *entry, target string) error {
	tdir, tbase := splitRel(target)
	tfd, err := s.r.openDir(tdir, false)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return entryErr(ErrInvalidHardlink, e.name, " -> %s (target not found)", printable(e.hdr.Linkname))
		}
		return opErr("resolve hardlink target of", e.name, err)
	}
	defer unix.Close(tfd)
	tst, exists, err := lstatAt(tfd, tbase)
	if err != nil {
		return opErr("stat hardlink target of", e.name, err)
	}
	if !exists {
		return entryErr(ErrInvalidHardlink, e.name, " -> %s (target not found)", printable(e.hdr.Linkname))
	}
	if isDir(&tst) {
		return entryErr(ErrInvalidHardlink, e.name, " -> %s (target is a directory)", printable(e.hdr.Linkname))
	}
	pfd, base, err := s.parent(e)
	if err != nil {
		return err
	}
	if st, exists, err := lstatAt(pfd, base); err != nil {
		return opErr("stat", e.name, err)
	} else if exists && st.Dev == tst.Dev && st.Ino == tst.Ino {
		s.mark(e.rel)
		return nil // already that file (a link to itself, or a repeat)
	}
	s.forget()
	if err := s.clear(e, pfd, base); err != nil {
		return err
	}
	// linkat without AT_SYMLINK_FOLLOW: a symlink target is linked as the
	// symlink itself, never as whatever it points to.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// It was there (lstat above): only clearing a directory
			// that held it (Layer mode) can have removed it.
			return hardlinkInsideErr(e.name, e.hdr.Linkname)
		}
		return opErr("link", e.name, err)
	}
	s.mark(e.rel)
	return nil
}

// clear makes room for the non-directory entry e at base in pfd: see
// clearForNonDir and errDirNotEmpty for the rule on directories.
func (s *diskSink) clear(e *entry, pfd int, base string) error {
	err := clearForNonDir(pfd, base, s.opts.Mode != Layer)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errDirNotEmpty):
		return notEmptyErr(e.name)
	}
	return opErr("replace", e.name, err)
}

func (s *diskSink) node(e *entry) error {
	pfd, base, err := s.parent(e)
	if err != nil {
		return err
	}
	s.forget()
	if err := s.clear(e, pfd, base); err != nil {
		return err
	}
	m := mode(e.hdr) &^ 0o7000
	var dev int
	switch e.hdr.Typeflag {
	case tar.TypeChar:
		m |= unix.S_IFCHR
		dev = int(unix.Mkdev(uint32(e.hdr.Devmajor), uint32(e.hdr.Devminor)))
	case tar.TypeBlock:
		m |= unix.S_IFBLK
		dev = int(unix.Mkdev(uint32(e.hdr.Devmajor), uint32(e.hdr.Devminor)))
	case tar.TypeFifo:
		m |= unix.S_IFIFO
	}
	if err := unix.Mknodat(pfd, base, m, dev); err != nil {
		return opErr("mknod", e.name, err)
	}
	if err := s.chown(e, func(u, g int) error { return unix.Fchownat(pfd, base, u, g, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return err
	}
	if err := chmodAt(pfd, base, mode(e.hdr)); err != nil {
		return opErr("chmod", e.name, err)
	}
	if hasXattrs(e.hdr) {
		s.opts.warn("skipping xattrs on device or fifo %s", e.name)
	}
	ts := times(e.hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return opErr("set times of", e.name, err)
	}
	s.mark(e.rel)
	return nil
}
