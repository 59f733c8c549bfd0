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
	lenient  bool
	h        *hasher
	kids     map[nodeKey]nodeID
	typ      []byte   // by nodeID: tar.TypeDir, tar.TypeSymlink, or tar.TypeReg for any other
	parentOf []nodeID // by nodeID: the directory it was made in (the root's is the root)
	depth    []uint32 // by nodeID: levels below the root
	nkids    []uint32 // by nodeID: names in it (a non-empty directory is kept in Rootfs mode, see errDirNotEmpty)
	keepFull bool     // not Layer mode
	target   map[nodeID]string
	implied  int   // directories made for parents, which count as entries
	steps    int64 // path components and remembered symlinks looked at, for tests of the cost

	// links remembers where a symlink leads (see resolveLink) while gen
	// is what it was then: gen changes whenever a directory or symlink a
	// remembered resolution went through is replaced or removed, the
	// only change that can send it elsewhere. (A new name cannot: a
	// resolution that succeeded did not look for it; nor can replacing a
	// file, which it did not go through, or a node it did not meet.)
	// used[id] is gen+1 for the nodes the resolutions remembered in this
	// gen went through.
	//
	// Lenient, a resolution may also lead into the unseen parent, where
	// a name it looked for was missing; that outcome is remembered too
	// (where every entry through a chain into the parent cost the whole
	// chain again), and changes when the name is made: missed[id] is
	// gen+1 for the directories such a remembered resolution missed a
	// name in, and a new name in one starts a new gen.
	links  map[nodeID]linkMemo
	gen    uint32
	used   []uint32
	missed []uint32
}

type linkMemo struct {
	gen     uint32
	dir     nodeID
	unknown int  // levels below dir in the unseen parent (lenient)
	count   int  // symlinks followed to get there, this one included
	parent  bool // the resolution went into the unseen parent
}

type nodeID uint32

type nodeKey struct {
	parent nodeID
	name   pathHash
}

const (
	rootNode    nodeID = 0
	unknownNode nodeID = ^nodeID(0) // lenient: somewhere in the unseen parent
	none        nodeID = ^nodeID(0) - 1
)

func newModelSink(opts Options) *modelSink {
	return &modelSink{
		lenient:  opts.Mode == Layer && !opts.emptyParent,
		h:        newHasher(),
		kids:     map[nodeKey]nodeID{},
		typ:      []byte{tar.TypeDir},
		parentOf: []nodeID{rootNode},
		used:     []uint32{0},
		missed:   []uint32{0},
		depth:    []uint32{0},
		nkids:    []uint32{0},
		keepFull: opts.Mode != Layer,
		target:   map[nodeID]string{},
		links:    map[nodeID]linkMemo{},
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
	m.parentOf = append(m.parentOf, parent)
	m.used = append(m.used, 0)
	m.missed = append(m.missed, 0)
	m.depth = append(m.depth, m.depth[parent]+1)
	m.nkids = append(m.nkids, 0)
	key := nodeKey{parent, m.h.chain(pathHash{}, name)}
	if old, ok := m.kids[key]; ok {
		m.gone(old)
	} else {
		m.nkids[parent]++
		if m.missed[parent] == m.gen+1 {
			m.newGen() // a remembered resolution went into the parent here
		}
	}
	m.kids[key] = id
	return id
}

// gone notes that node id no longer has its name: what a symlink leads
// to may have changed if a remembered resolution went through it.
func (m *modelSink) gone(id nodeID) {
	if m.used[id] == m.gen+1 {
		m.newGen()
	}
}

// newGen forgets every remembered resolution.
func (m *modelSink) newGen() {
	m.gen++
	if m.gen == 0 { // wrapped: no memo may look current
		clear(m.links)
	}
}

// pos is a place a resolution has reached: the directory node, or, in
// the unseen parent (lenient), unknown levels below it. Every directory
// node has one parent, so ".." needs no stack: it is parentOf, as
// RESOLVE_IN_ROOT's ".." is the real parent (never above the root).
type pos struct {
	node    nodeID
	unknown int
}

// resolution is the state of one lookup: the symlinks followed so far
// (at most 40, as in the kernel), and whether it went into the unseen
// parent, whose outcome may change as the layer writes, so it is not
// remembered.
type resolution struct {
	base       int // symlinks the enclosing resolutions followed before this one
	links      int
	sawUnknown bool
	create     bool // make missing components (of the path itself only)
	remember   bool // a symlink's, to be remembered: mark the nodes met
}

// resolveDir resolves the directory rel. With create, missing
// components of rel itself are made (as openDir does), never those met
// inside a symlink's target.
func (m *modelSink) resolveDir(rel string, create bool) (nodeID, error) {
	p := pos{node: rootNode}
	r := resolution{create: create}
	var err error
	components(rel, func(c string) bool {
		err = m.step(&p, c, &r)
		return err == nil
	})
	if err != nil {
		return 0, err
	}
	if p.unknown > 0 {
		return unknownNode, nil
	}
	return p.node, nil
}

// step moves p one component c down (or up, for ".."); a symlink there
// is followed to its end.
func (m *modelSink) step(p *pos, c string, r *resolution) error {
	if c == ".." {
		if p.unknown > 0 {
			p.unknown--
		} else {
			p.node = m.parentOf[p.node]
		}
		return nil
	}
	if p.unknown > 0 {
		p.unknown++
		return nil
	}
	id, ok := m.child(p.node, c)
	switch {
	case !ok && r.create:
		m.implied++
		p.node = m.newNode(p.node, c, tar.TypeDir)
		return nil
	case !ok && m.lenient:
		if r.remember {
			m.missed[p.node] = m.gen + 1
		}
		p.unknown = 1
		r.sawUnknown = true
		return nil
	case !ok:
		return errDangling
	}
	if r.remember {
		m.used[id] = m.gen + 1
	}
	switch m.typ[id] {
	case tar.TypeDir:
		p.node = id
		return nil
	case tar.TypeSymlink:
		return m.follow(p, id, r)
	}
	return errNotDir
}

// follow moves p to where the symlink id leads, counting the symlinks
// that takes against r's 40.
func (m *modelSink) follow(p *pos, id nodeID, r *resolution) error {
	m.steps++
	if memo, ok := m.links[id]; ok && memo.gen == m.gen {
		r.links += memo.count
		if r.base+r.links > maxSymlinks {
			return errLoop
		}
		p.node, p.unknown = memo.dir, memo.unknown
		r.sawUnknown = r.sawUnknown || memo.parent
		return nil
	}
	to, sub, err := m.resolveLink(id, r.base+r.links)
	if err != nil {
		return err
	}
	r.links += sub.links
	if r.base+r.links > maxSymlinks {
		return errLoop
	}
	r.sawUnknown = r.sawUnknown || sub.sawUnknown
	*p = to
	return nil
}

// resolveLink resolves the target of symlink id on its own, from the
// directory that holds it, and remembers the outcome when it cannot
// change until a directory or symlink is replaced. A symlink leads to
// the same place whoever looks through it (its directory is fixed, and
// ".." goes to real parents), so each is resolved once, however many
// entries and other symlinks go through it: the cost is linear in the
// archive, where resolving nested symlinks afresh cost up to 40 × 2,000
// components per entry. Its own count of symlinks (this one and those
// nested) is added to the caller's: the limit of 40 is on the sum, so
// the verdict is the kernel's; before is the callers' count, so that a
// loop stops at 40 however it nests.
func (m *modelSink) resolveLink(id nodeID, before int) (pos, resolution, error) {
	sub := resolution{base: before, links: 1, remember: true}
	if before+sub.links > maxSymlinks {
		return pos{}, sub, errLoop
	}
	t := m.target[id]
	p := pos{node: m.parentOf[id]}
	if len(t) > 0 && t[0] == '/' {
		p.node = rootNode
	}
	var err error
	components(t, func(c string) bool {
		err = m.step(&p, c, &sub)
		return err == nil
	})
	if err != nil {
		return pos{}, sub, err
	}
	m.links[id] = linkMemo{gen: m.gen, dir: p.node, unknown: p.unknown, count: sub.links, parent: sub.sawUnknown}
	m.used[id] = m.gen + 1
	return p, sub, nil
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

// put makes a non-directory of type typ at e, replacing what was there:
// a directory only if it is empty, or in Layer mode with its contents
// (errDirNotEmpty). linkDir is, for a hardlink, the directory holding
// its target, which a directory the link replaces must not hold
// (hardlinkInsideErr); none otherwise.
func (m *modelSink) put(e *entry, typ byte, target string, linkDir nodeID) error {
	p, base, err := m.parent(e)
	if err != nil || p == unknownNode {
		return err
	}
	if old, ok := m.child(p, base); ok && m.typ[old] == tar.TypeDir {
		switch {
		case m.keepFull && m.nkids[old] > 0:
			return notEmptyErr(e.name)
		case linkDir != none && linkDir != unknownNode && m.under(linkDir, old):
			return hardlinkInsideErr(e.name, e.hdr.Linkname)
		}
	}
	id := m.newNode(p, base, typ)
	if typ == tar.TypeSymlink {
		m.target[id] = target
	}
	return nil
}

// under reports whether directory n is dir or below it: its real
// parents, as removing dir removes them, whatever symlinks led to n.
func (m *modelSink) under(n, dir nodeID) bool {
	for m.depth[n] > m.depth[dir] {
		m.steps++
		n = m.parentOf[n]
	}
	return n == dir
}

func (m *modelSink) dir(e *entry) error {
	if e.rel == "" {
		return nil
	}
	p, base, err := m.parent(e)
	if err != nil || p == unknownNode {
		return err
	}
	if m.depth[p]+1 > MaxPathLen {
		return tooDeepErr(e.name) // as Extract (see errTooDeep)
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
	return m.put(e, tar.TypeReg, "", none)
}

func (m *modelSink) symlink(e *entry) error { return m.put(e, tar.TypeSymlink, e.hdr.Linkname, none) }

func (m *modelSink) node(e *entry) error { return m.put(e, tar.TypeReg, "", none) }

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
	return m.put(e, typ, t, d)
}

func (m *modelSink) whiteout(e *entry, dir, name string) error {
	d, err := m.resolveDir(dir, false)
	if err != nil || d == unknownNode {
		return nil // nothing below to hide
	}
	m.steps++
	key := nodeKey{d, m.h.chain(pathHash{}, name)}
	if old, ok := m.kids[key]; ok {
		m.gone(old)
		delete(m.kids, key)
		m.nkids[d]--
	}
	return nil
}

// opaque removes what the parent layer had, which the model never saw.
func (m *modelSink) opaque(e *entry, dir string) error { return nil }

func (m *modelSink) impliedDirs() int { return m.implied }

func (m *modelSink) finish() error { return nil }
