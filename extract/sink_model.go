package extract

import (
	"archive/tar"
	"io"
	"strings"
)

// modelSink stands in for the filesystem in Validate: it records the type
// of every path written (and symlink targets, so paths through symlinks
// resolve the way they would on disk) and checks hardlink targets against
// that record. It writes nothing.
type modelSink struct {
	layer bool
	nodes map[string]modelNode
}

type modelNode struct {
	typ    byte   // tar typeflag: TypeDir, TypeSymlink, or other
	target string // symlink target
}

func newModelSink(opts Options) *modelSink {
	return &modelSink{layer: opts.Mode == Layer, nodes: map[string]modelNode{"": {typ: tar.TypeDir}}}
}

// resolveDir resolves a directory path the way root.resolve does on disk:
// symlinks followed inside the root, ".." clamped at it. ok is false when
// it leads through something known not to be a directory or loops.
func (m *modelSink) resolveDir(rel string) (string, bool) {
	var cur []string
	todo := splitPath(rel)
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		p := strings.Join(append(cur, c), "/")
		n, ok := m.nodes[p]
		switch {
		case !ok || n.typ == tar.TypeDir:
			// Unknown paths are directories to be (or in a lower
			// layer); the disk sink creates missing parents.
			cur = append(cur, c)
		case n.typ == tar.TypeSymlink:
			links++
			if links > maxSymlinks {
				return "", false
			}
			if strings.HasPrefix(n.target, "/") {
				cur = cur[:0]
			}
			todo = append(splitPath(n.target), todo...)
		default:
			return "", false
		}
	}
	return strings.Join(cur, "/"), true
}

func (m *modelSink) put(e *entry, n modelNode) {
	dir, base := splitRel(e.rel)
	if e.rel == "" {
		return
	}
	if d, ok := m.resolveDir(dir); ok {
		if d != "" {
			base = d + "/" + base
		}
		m.nodes[base] = n
	}
}

func (m *modelSink) dir(e *entry) error { m.put(e, modelNode{typ: tar.TypeDir}); return nil }

func (m *modelSink) file(e *entry, r io.Reader) error {
	// Reading the data here keeps the stream hashed and bounded the same
	// way as in Extract (the tar reader would skip it through the same
	// counting reader anyway).
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	m.put(e, modelNode{typ: tar.TypeReg})
	return nil
}

func (m *modelSink) symlink(e *entry) error {
	m.put(e, modelNode{typ: tar.TypeSymlink, target: e.hdr.Linkname})
	return nil
}

func (m *modelSink) hardlink(e *entry, target string) error {
	tdir, tbase := splitRel(target)
	d, ok := m.resolveDir(tdir)
	if !ok {
		return entryErr(ErrInvalidHardlink, e.name, " -> %s (target not found)", e.hdr.Linkname)
	}
	key := tbase
	if d != "" {
		key = d + "/" + tbase
	}
	n, known := m.nodes[key]
	switch {
	case known && n.typ == tar.TypeDir:
		return entryErr(ErrInvalidHardlink, e.name, " -> %s (target is a directory)", e.hdr.Linkname)
	case !known && !m.layer:
		return entryErr(ErrInvalidHardlink, e.name, " -> %s (target not found)", e.hdr.Linkname)
	}
	// In Layer mode an unknown target may be in a lower layer; Extract
	// checks it against the real parent.
	if !known {
		n = modelNode{typ: tar.TypeReg}
	}
	m.put(e, n)
	return nil
}

func (m *modelSink) node(e *entry) error { m.put(e, modelNode{typ: tar.TypeChar}); return nil }

func (m *modelSink) whiteout(e *entry, dir, name string) error {
	if d, ok := m.resolveDir(dir); ok {
		if d != "" {
			name = d + "/" + name
		}
		delete(m.nodes, name)
	}
	return nil
}

func (m *modelSink) opaque(e *entry, dir string) error { return nil }

func (m *modelSink) finish() error { return nil }
