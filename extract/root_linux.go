package extract

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSymlinks is the kernel's limit on symlinks followed in one lookup
// (MAXSYMLINKS); the userspace walk uses the same so both paths fail alike.
const maxSymlinks = 40

// root is the target directory. Every directory an entry is written into is
// reached by resolving its path *inside* root: symlinks met on the way are
// followed as if root were "/" (so "/bin/sh -> busybox" style images work,
// and a symlink planted by an earlier entry or layer pointing at "/etc" or
// "../../.." lands back inside root), and ".." never climbs above it. The
// last component is then acted on relative to that directory's fd with
// calls that do not follow it. Nothing is ever looked up by an absolute
// host path, so nothing outside root can be named.
type root struct {
	fd   int // O_PATH|O_DIRECTORY
	path string
	// walk is set when openat2 is unavailable (kernel < 5.6, or a seccomp
	// profile that refuses it): resolution is then done component by
	// component in userspace with the same semantics.
	walk bool

	// created counts the directories openDir made for parents; onCreate,
	// when set, is told of each (an O_PATH fd to it).
	created  int
	onCreate func(fd int)
	ends     []int // openDir scratch
}

func openRoot(path string, forceWalk bool) (*root, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open target root %s: %w", path, err)
	}
	r := &root{fd: fd, path: path, walk: forceWalk}
	if !r.walk {
		probe, err := r.openat2(".")
		switch {
		case err == nil:
			unix.Close(probe)
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
			r.walk = true
		default:
			unix.Close(fd)
			return nil, fmt.Errorf("open target root %s: %w", path, err)
		}
	}
	return r, nil
}

func (r *root) Close() error { return unix.Close(r.fd) }

func (r *root) openat2(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 16 {
		fd, err := unix.Openat2(r.fd, rel, how)
		// EAGAIN: a concurrent rename raced the lookup; retry.
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// openDir returns an O_PATH fd for the directory rel (a cleaned relative
// path, "" for the root), resolved inside root. When create is set,
// missing directories are made (mode 0755, like tar's implied parents):
// the longest existing prefix is resolved inside root, and each missing
// component below it is made with mkdirat on the fd of its parent and
// opened with O_NOFOLLOW, so nothing is ever created through a symlink's
// target (a dangling symlink in the path is an error, as in tar).
func (r *root) openDir(rel string, create bool) (int, error) {
	fd, err := r.resolve(rel)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	// ends[i] is where the prefix of i+1 components ends in rel, so
	// prefixes are slices of rel, never rebuilt (a 2,000-deep path would
	// otherwise copy megabytes per entry).
	ends := r.ends[:0]
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			ends = append(ends, i)
		}
	}
	ends = append(ends, len(rel))
	r.ends = ends
	prefix := func(k int) string { // the first k components
		if k == 0 {
			return ""
		}
		return rel[:ends[k-1]]
	}
	comp := func(i int) string { // component i
		start := 0
		if i > 0 {
			start = ends[i-1] + 1
		}
		return rel[start:ends[i]]
	}
	// Binary search for the longest prefix that resolves: if prefix k
	// resolves, every shorter one does, since resolving it walks them.
	lo, hi := 0, len(ends)-1 // prefix lo resolves; prefix hi+1 does not
	for lo < hi {
		mid := (lo + hi + 1) / 2
		fd, err := r.resolve(prefix(mid))
		if err == nil {
			unix.Close(fd)
			lo = mid
		} else if errors.Is(err, unix.ENOENT) {
			hi = mid - 1
		} else {
			return -1, fmt.Errorf("resolve %s: %w", prefix(mid), err)
		}
	}
	parent, err := r.resolve(prefix(lo))
	if err != nil {
		return -1, fmt.Errorf("resolve %s: %w", prefix(lo), err)
	}
	for i := lo; i < len(ends); i++ {
		if err := unix.Mkdirat(parent, comp(i), 0o755); err != nil {
			unix.Close(parent)
			if err != unix.EEXIST {
				return -1, fmt.Errorf("mkdir %s: %w", prefix(i+1), err)
			}
			// Something is there that did not resolve to a directory
			// (a dangling symlink, a loop, a file): report why.
			next, rerr := r.resolve(prefix(i + 1))
			if rerr != nil {
				return -1, fmt.Errorf("resolve %s: %w", prefix(i+1), rerr)
			}
			parent = next
			continue
		}
		next, err := unix.Openat(parent, comp(i), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(parent)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", prefix(i+1), err)
		}
		r.created++
		if r.onCreate != nil {
			r.onCreate(next)
		}
		parent = next
	}
	return parent, nil
}

func (r *root) resolve(rel string) (int, error) {
	if r.walk {
		return r.walkResolve(rel)
	}
	return r.openat2(rel)
}

// walkResolve is RESOLVE_IN_ROOT in userspace: each component is opened
// with O_PATH|O_NOFOLLOW relative to the previous one; a symlink is read
// and its target spliced into the remaining path (an absolute target
// restarts at root), ".." pops one level but never past root.
func (r *root) walkResolve(rel string) (int, error) {
	rootDup, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	stack := []int{rootDup}
	closeAll := func() {
		for _, fd := range stack {
			unix.Close(fd)
		}
	}
	// todo is a stack, next component on top: a symlink's target is
	// pushed onto it rather than spliced in front of a copied rest, so the
	// cost is the number of components, not their square.
	var todo []string
	pushPath := func(p string) {
		start := len(todo)
		components(p, func(c string) bool { todo = append(todo, c); return true })
		for i, j := start, len(todo)-1; i < j; i, j = i+1, j-1 {
			todo[i], todo[j] = todo[j], todo[i]
		}
	}
	pushPath(rel)
	links := 0
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(stack[len(stack)-1])
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := stack[len(stack)-1]
		fd, err := unix.Openat(cur, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			closeAll()
			return -1, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			stack = append(stack, fd)
		case unix.S_IFLNK:
			links++
			target, err := readlinkFd(fd)
			unix.Close(fd)
			if err == nil && links > maxSymlinks {
				err = unix.ELOOP
			}
			if err != nil {
				closeAll()
				return -1, err
			}
			if strings.HasPrefix(target, "/") {
				for len(stack) > 1 {
					unix.Close(stack[len(stack)-1])
					stack = stack[:len(stack)-1]
				}
			}
			pushPath(target)
		default:
			unix.Close(fd)
			closeAll()
			return -1, unix.ENOTDIR
		}
	}
	top := stack[len(stack)-1]
	stack = stack[:len(stack)-1]
	closeAll()
	return top, nil
}

// readlinkFd reads the target of the symlink an O_PATH|O_NOFOLLOW fd
// refers to (readlinkat with an empty path, Linux >= 2.6.39).
func readlinkFd(fd int) (string, error) {
	return readlinkAt(fd, "")
}

func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
	return "", unix.ENAMETOOLONG
}
