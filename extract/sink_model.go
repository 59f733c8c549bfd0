package extract

import (
	"archive/tar"
	"errors"
	"io"
)

// modelSink stands in for the filesystem in Validate. It is a tree of the
// paths the archive made, resolved with the kernel's rules inside the root
// (RESOLVE_IN_ROOT: symlinks followed as if the root were "/", ".." never
// above it, at most 40 symlinks, a dangling symlink or a non-directory on
// the way is an error, missing parents are made), so that it decides
// every entry as the disk does: the same tree the userspace walk
// (root.walkResolve) and openat2 walk on disk.
//
// Memory is bounded independently of the names: a node is a type byte,
// and its place in the tree a map key of its parent's id and a 128-bit
// hash of its own name (pathHash). Only symlink targets are kept as text,
// and their total is bounded (maxSymlinkTargets). Replacing a directory
// gives the name a new node, so whatever was under the old one is gone,
// as on disk.
type modelSink struct {
	// lenient: Layer mode over a parent Validate cannot see. A path the
	// layer did not write may be a directory there (so it is assumed to
	// be one) and a hardlink target it did not write may exist there.
	lenient bool
	h       *hasher
	kids    map[nodeKey]nodeID
	typ     []byte // by nodeID: tar.TypeDir, tar.TypeSymlink, or tar.TypeReg for any other
	target  map[nodeID]string
	implied int   // directories made for parents, which count as entries
	steps   int64 // path components looked at, for tests of the cost

	stack []nodeID // resolution scratch
	todo  []string
}

type nodeID uint32

type nodeKey struct {
	parent nodeID
	name   pathHash
}

const (
	rootNode    nodeID = 0
	unknownNode nodeID = ^nodeID(0) // lenient: somewhere in the unseen parent
)

func newModelSink(opts Options) *modelSink {
	return &modelSink{
		lenient: opts.Mode == Layer && !opts.emptyParent,
		h:       newHasher(),
		kids:    map[nodeKey]nodeID{},
		typ:     []byte{tar.TypeDir},
		target:  map[nodeID]string{},
	}
}

// Resolution failures, as the kernel reports them.
var (
	errNotDir   = errors.New("not a directory")
	errDangling = errors.New("dangling symlink")
	errLoop     = errors.New("symlink loop")
)

func (m *modelSink) child(parent nodeID, name string) (nodeID, bool) {
	m.steps++
	id, ok := m.kids[nodeKey{parent, m.h.chain(pathHash{}, name)}]
	return id, ok
}

func (m *modelSink) newNode(parent nodeID, name string, typ byte) nodeID {
	id := nodeID(len(m.typ))
	m.typ = append(m.typ, typ)
	m.kids[nodeKey{parent, m.h.chain(pathHash{}, name)}] = id
	return id
}

// resolveDir resolves the directory rel. With create, missing
// components of rel itself are made (as openDir does), never those met
// inside a symlink's target.
func (m *modelSink) resolveDir(rel string, create bool) (nodeID, error) {
	m.stack = append(m.stack[:0], rootNode)
	links := 0
	var err error
	components(rel, func(c string) bool {
		err = m.step(c, create, &links)
		return err == nil
	})
	if err != nil {
		return 0, err
	}
	return m.stack[len(m.stack)-1], nil
}

// step moves m.stack one component c down; a symlink there is followed
// to its end.
func (m *modelSink) step(c string, create bool, links *int) error {
	cur := m.stack[len(m.stack)-1]
	if cur == unknownNode {
		return nil
	}
	id, ok := m.child(cur, c)
	switch {
	case !ok && create:
		m.implied++
		m.stack = append(m.stack, m.newNode(cur, c, tar.TypeDir))
		return nil
	case !ok && m.lenient:
		m.stack = append(m.stack, unknownNode)
		return nil
	case !ok:
		return errDangling
	case m.typ[id] == tar.TypeDir:
		m.stack = append(m.stack, id)
		return nil
	case m.typ[id] == tar.TypeSymlink:
		return m.follow(id, links)
	}
	return errNotDir
}

// follow resolves the symlink id from the directory on top of the stack,
// replacing the top of the stack with where it leads. Its components are
// looked at one by one, nested symlinks included, with a work list rather
// than by rebuilding paths, so the cost is the number of components.
func (m *modelSink) follow(id nodeID, links *int) error {
	base := len(m.todo)
	defer func() { m.todo = m.todo[:base] }()
	push := func(id nodeID) error {
		*links++
		if *links > maxSymlinks {
			return errLoop
		}
		t := m.target[id]
		if len(t) > 0 && t[0] == '/' {
			m.stack = m.stack[:1]
		}
		// Pushed in reverse so the first component is on top.
		start := len(m.todo)
		components(t, func(c string) bool { m.todo = append(m.todo, c); return true })
		for i, j := start, len(m.todo)-1; i < j; i, j = i+1, j-1 {
			m.todo[i], m.todo[j] = m.todo[j], m.todo[i]
		}
		return nil
	}
	if err := push(id); err != nil {
		return err
	}
	for len(m.todo) > base {
		c := m.todo[len(m.todo)-1]
		m.todo = m.todo[:len(m.todo)-1]
		if c == ".." {
			if len(m.stack) > 1 {
				m.stack = m.stack[:len(m.stack)-1]
			}
			continue
		}
		cur := m.stack[len(m.stack)-1]
		if cur == unknownNode {
			continue
		}
		id, ok := m.child(cur, c)
		switch {
		case !ok && m.lenient:
			m.stack = append(m.stack, unknownNode)
		case !ok:
			return errDangling
		case m.typ[id] == tar.TypeDir:
			m.stack = append(m.stack, id)
		case m.typ[id] == tar.TypeSymlink:
			if err := push(id); err != nil {
				return err
			}
		default:
			return errNotDir
		}
	}
	return nil
}

// parent resolves e's directory, making missing parents, and returns it
// and e's last component, or the error Extract gives.
func (m *modelSink) parent(e *entry) (nodeID, string, error) {
	dir, base := splitRel(e.rel)
	p, err := m.resolveDir(dir, true)
	if err != nil {
		return 0, "", parentErr(e.name, err)
	}
	return p, base, nil
}

// put makes a non-directory of type typ at e, replacing what was there.
func (m *modelSink) put(e *entry, typ byte, target string) error {
	p, base, err := m.parent(e)
	if err != nil || p == unknownNode {
		return err
	}
	id := m.newNode(p, base, typ)
	if typ == tar.TypeSymlink {
		m.target[id] = target
	}
	return nil
}

func (m *modelSink) dir(e *entry) error {
	if e.rel == "" {
		return nil
	}
	p, base, err := m.parent(e)
	if err != nil || p == unknownNode {
		return err
	}
	if id, ok := m.child(p, base); ok && m.typ[id] == tar.TypeDir {
		return nil // a directory over a directory keeps its contents
	}
	m.newNode(p, base, tar.TypeDir)
	return nil
}

func (m *modelSink) file(e *entry, r io.Reader) error {
	// Reading the data here keeps the stream hashed and bounded the same
	// way as in Extract (the tar reader would skip it through the same
	// counting reader anyway).
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	return m.put(e, tar.TypeReg, "")
}

func (m *modelSink) symlink(e *entry) error { return m.put(e, tar.TypeSymlink, e.hdr.Linkname) }

func (m *modelSink) node(e *entry) error { return m.put(e, tar.TypeReg, "") }

func (m *modelSink) hardlink(e *entry, target string) error {
	tdir, tbase := splitRel(target)
	notFound := entryErr(ErrInvalidHardlink, e.name, " -> %s (target not found)", printable(e.hdr.Linkname))
	d, err := m.resolveDir(tdir, false)
	if err != nil {
		return notFound
	}
	typ, t := byte(tar.TypeReg), "" // an unseen target in the parent layer
	if d != unknownNode {
		id, ok := m.child(d, tbase)
		switch {
		case ok && m.typ[id] == tar.TypeDir:
			return entryErr(ErrInvalidHardlink, e.name, " -> %s (target is a directory)", printable(e.hdr.Linkname))
		case ok:
			typ, t = m.typ[id], m.target[id]
		case !m.lenient:
			return notFound
		}
	}
	// A hardlink to a symlink is that symlink, target and all.
	return m.put(e, typ, t)
}

func (m *modelSink) whiteout(e *entry, dir, name string) error {
	d, err := m.resolveDir(dir, false)
	if err != nil || d == unknownNode {
		return nil // nothing below to hide
	}
	m.steps++
	delete(m.kids, nodeKey{d, m.h.chain(pathHash{}, name)})
	return nil
}

// opaque removes what the parent layer had, which the model never saw.
func (m *modelSink) opaque(e *entry, dir string) error { return nil }

func (m *modelSink) impliedDirs() int { return m.implied }

func (m *modelSink) finish() error { return nil }
