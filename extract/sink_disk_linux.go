package extract

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// diskSink writes entries under a root. See root for how paths are
// resolved; every method here acts on (parent fd, base name).
//
// What it remembers between entries is bounded by the number of entries,
// never by the length of their names: directories by inode, the paths a
// layer wrote by hash.
type diskSink struct {
	r    *root
	opts Options
	euid int
	egid int
	buf  []byte

	// dirs holds directory metadata applied at the end, after the
	// contents (creating a child changes a directory's mtime, and a
	// read-only directory could not be filled by a non-root caller),
	// by inode. onPath holds every directory on the way from the root
	// to one of them, so finish walks only those.
	dirs    map[inode]dirMeta
	onPath  map[inode]int32 // depth below the root
	rootIno inode
	walkBuf []byte

	// written is every path this layer wrote, and their parents, as
	// chained hashes of the cleaned names (Layer mode only): an opaque
	// whiteout keeps them even when it comes after them.
	written map[pathHash]struct{}
	h       *hasher

	warnedChown bool

	// pc is the directory the last entry went into: see parent.
	pc parentCache
}

// parentCache keeps the fd of the last parent directory resolved, by its
// cleaned name. Consecutive entries of an archive are mostly in one
// directory, and resolving it again costs an openat2 and a close per
// entry. A path that resolved inside the root resolves to the same
// directory for as long as nothing is removed: making names (mkdirat,
// openat(O_CREAT|O_EXCL), symlinkat, linkat onto a cleared name) never
// changes how an existing path resolves, while removing one can (a
// replaced symlink or directory on the way, a whiteout). So every removal
// marks the cache stale (forget) before it happens; the fd itself stays
// open until the next parent call, because the entry being written may
// still be using it.
type parentCache struct {
	dir   string
	fd    int // -1: none
	stale bool
}

type inode struct{ dev, ino uint64 }

type dirMeta struct {
	mode  uint32
	times [2]unix.Timespec
}

func newDiskSink(r *root, opts Options) *diskSink {
	s := &diskSink{
		r:      r,
		opts:   opts,
		euid:   os.Geteuid(),
		egid:   os.Getegid(),
		buf:    make([]byte, 1<<20),
		dirs:   map[inode]dirMeta{},
		onPath: map[inode]int32{},
		h:      newHasher(),
		pc:     parentCache{fd: -1},
	}
	var st unix.Stat_t
	if unix.Fstat(r.fd, &st) == nil {
		s.rootIno = inode{st.Dev, st.Ino}
	}
	// A directory made for a parent may reuse the inode of one removed
	// earlier: it must not take that one's metadata.
	r.onCreate = func(fd int) {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			delete(s.dirs, inode{st.Dev, st.Ino})
			delete(s.onPath, inode{st.Dev, st.Ino}) // nor its depth
		}
	}
	if opts.Mode == Layer {
		s.written = map[pathHash]struct{}{}
	}
	return s
}

func (s *diskSink) impliedDirs() int { return s.r.created }

func (s *diskSink) mark(rel string) {
	if s.written == nil {
		return
	}
	// Mark the parents too: an opaque whiteout of a parent must descend
	// into them rather than remove them.
	var h pathHash
	s.written[h] = struct{}{}
	components(rel, func(c string) bool {
		h = s.h.chain(h, c)
		s.written[h] = struct{}{}
		return true
	})
}

// noteOnPath records the directory open at fd, and its parents up to the
// root, as on the way to a directory with metadata, and returns its depth
// below the root. Parents are usually known already, so this is one
// fstat per directory entry. A directory deeper than MaxPathLen (reached
// through symlinks) is errTooDeep, which Validate finds too (the walk in
// finish could not reach it).
func (s *diskSink) noteOnPath(fd int) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	in := inode{st.Dev, st.Ino}
	if in == s.rootIno {
		return 0, nil
	}
	if d, ok := s.onPath[in]; ok {
		return int(d), nil
	}
	dup, err := unix.Openat(fd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer func() { unix.Close(dup) }()
	var chain []inode // from fd up, not yet known
	above := 0        // depth of the first known one above them
	for {
		var st unix.Stat_t
		if err := unix.Fstat(dup, &st); err != nil {
			return 0, err
		}
		in := inode{st.Dev, st.Ino}
		if in == s.rootIno {
			break
		}
		if d, ok := s.onPath[in]; ok {
			above = int(d)
			break
		}
		if len(chain) >= MaxPathLen {
			return 0, errTooDeep
		}
		chain = append(chain, in)
		up, err := unix.Openat(dup, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		unix.Close(dup)
		dup = up
	}
	if above+len(chain) > MaxPathLen {
		return 0, errTooDeep
	}
	for i, in := range chain {
		s.onPath[in] = int32(above + len(chain) - i)
	}
	return above + len(chain), nil
}

// parent resolves the directory of rel inside the root, creating missing
// directories, and returns its fd and rel's last component. The fd
// belongs to the parent cache: callers must not close it, and must call
// forget before removing anything.
func (s *diskSink) parent(e *entry) (int, string, error) {
	dir, base := splitRel(e.rel)
	if s.pc.fd >= 0 && !s.pc.stale && s.pc.dir == dir {
		return s.pc.fd, base, nil
	}
	s.closeParent()
	fd, err := s.r.openDir(dir, true)
	if err != nil {
		if perr := parentErr(e.name, err); perr != nil {
			return -1, "", perr
		}
		return -1, "", opErr("resolve parent directory of", e.name, err)
	}
	// A copy: dir is a slice of the entry's name, and the cache must
	// not keep the whole header alive.
	s.pc = parentCache{dir: strings.Clone(dir), fd: fd}
	return fd, base, nil
}

// forget marks the cached parent stale: something is about to be
// removed, after which the cached name may resolve elsewhere or not at
// all. The fd stays valid for the current entry.
func (s *diskSink) forget() { s.pc.stale = true }

func (s *diskSink) closeParent() {
	if s.pc.fd >= 0 {
		unix.Close(s.pc.fd)
	}
	s.pc = parentCache{fd: -1}
}

// close releases what the sink holds open; Extract calls it however the
// run ended.
func (s *diskSink) close() { s.closeParent() }

func mode(h *tar.Header) uint32 { return uint32(h.Mode) & 0o7777 }

func times(h *tar.Header) [2]unix.Timespec {
	mt := h.ModTime
	at := h.AccessTime
	if at.IsZero() {
		at = mt
	}
	return [2]unix.Timespec{timespec(at), timespec(mt)}
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Sec: 0}
	}
	// Not UnixNano: it overflows past 2262, and archives can say anything.
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// chown applies the entry's owner. A caller that is not root cannot give
// files away; that is reported once through Warn and otherwise ignored,
// so tests and rootless validation runs work. As root every failure is an
// error: a root filesystem with the wrong owners is a broken image.
func (s *diskSink) chown(e *entry, do func(uid, gid int) error) error {
	err := do(e.hdr.Uid, e.hdr.Gid)
	if err == nil {
		return nil
	}
	if (s.euid != 0 || s.opts.IgnoreChownErrors) && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL)) {
		if !s.warnedChown {
			s.warnedChown = true
			s.opts.warn("cannot change ownership, keeping the caller's (first: %s wants %d:%d: %v)", e.name, e.hdr.Uid, e.hdr.Gid, err)
		}
		return nil
	}
	return opErr("chown", e.name, err)
}

// xattrs sets the entry's PAX SCHILY.xattr.* records on an open fd, after
// chown (which clears security.capability) and chmod.
func (s *diskSink) xattrs(e *entry, fd int) error {
	for k, v := range e.hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(key, "trusted.") {
			// trusted.* belongs to the host (overlayfs keeps its own
			// state there); an image must not be able to forge it.
			s.opts.warn("skipping xattr %s on %s", key, e.name)
			continue
		}
		err := unix.Fsetxattr(fd, key, []byte(v), 0)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) || (s.euid != 0 && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES))) {
			s.opts.warn("cannot set xattr %s on %s: %v", key, e.name, err)
			continue
		}
		return opErr("set xattr "+key+" on", e.name, err)
	}
	return nil
}

func hasXattrs(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			return true
		}
	}
	return false
}

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
		if err := clearForNonDir(pfd, base); err != nil {
			return opErr("replace", e.name, err)
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
		if err := clearForNonDir(pfd, base); err != nil {
			return opErr("replace", e.name, err)
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
	if err := clearForNonDir(pfd, base); err != nil {
		return opErr("replace", e.name, err)
	}
	// linkat without AT_SYMLINK_FOLLOW: a symlink target is linked as the
	// symlink itself, never as whatever it points to.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return opErr("link", e.name, err)
	}
	s.mark(e.rel)
	return nil
}

func (s *diskSink) node(e *entry) error {
	pfd, base, err := s.parent(e)
	if err != nil {
		return err
	}
	s.forget()
	if err := clearForNonDir(pfd, base); err != nil {
		return opErr("replace", e.name, err)
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
