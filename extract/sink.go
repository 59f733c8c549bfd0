package extract

import (
	"archive/tar"
	"io"
)

// entry is one tar entry after its name has been checked and cleaned.
type entry struct {
	name string // as in the archive, for messages
	rel  string // cleaned, relative to the root, "" for the root
	hdr  *tar.Header
}

// sink receives checked entries. The disk sink writes them under the root;
// the model sink (Validate) only tracks enough to check hardlink targets.
type sink interface {
	dir(e *entry) error
	file(e *entry, r io.Reader) error
	symlink(e *entry) error
	// hardlink links e.rel to target, a cleaned relative path.
	hardlink(e *entry, target string) error
	node(e *entry) error
	// whiteout removes name from directory dir (Layer mode).
	whiteout(e *entry, dir, name string) error
	// opaque empties dir of everything this layer has not written.
	opaque(e *entry, dir string) error
	// impliedDirs is the number of directories made so far for parents
	// no entry named; they count as entries against MaxEntries.
	impliedDirs() int
	// finish applies what had to wait for the end: directory modes and
	// times.
	finish() error
}
