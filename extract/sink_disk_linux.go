package extract

import (
	"os"
	"strings"

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
