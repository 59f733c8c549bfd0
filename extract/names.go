package extract

import (
	"errors"
	"strconv"
	"strings"
	"unicode"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	// whiteoutMeta prefixes aufs bookkeeping entries (".wh..wh.plnk"...),
	// which carry nothing an image needs.
	whiteoutMeta = ".wh..wh."
	rootfsDir    = "rootfs"
)

// cleanName turns an archive path into a path relative to the root: leading
// slashes and "." components dropped, ".." refused. It returns "" for the
// root itself. Cleaning is only about giving each entry one canonical name;
// safety comes from resolving that name inside the root (see root.go).
func cleanName(raw string, traversal error) (string, error) {
	if raw == "" {
		return "", &EntryError{Entry: raw, Detail: " (empty name)", Err: ErrInvalidName}
	}
	if strings.IndexByte(raw, 0) >= 0 {
		return "", &EntryError{Entry: raw, Detail: " (contains NUL)", Err: ErrInvalidName}
	}
	parts := strings.Split(raw, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", &EntryError{Entry: raw, Err: traversal}
		}
		if len(p) > MaxNameLen {
			return "", &EntryError{Entry: raw, Detail: " (component longer than 255 bytes)", Err: ErrInvalidName}
		}
		out = append(out, p)
	}
	rel := strings.Join(out, "/")
	if len(rel) >= MaxPathLen {
		return "", &EntryError{Entry: raw, Detail: " (path of 4096 bytes or more)", Err: ErrInvalidName}
	}
	return rel, nil
}

// errTooDeep: a directory entry more than MaxPathLen levels below the
// root, which only symlinks can reach (each name is shorter than
// PATH_MAX). Extract applies directory metadata at the end by walking
// down to each directory, which stops there, so Validate and Extract
// both refuse such an entry (tooDeepErr) where it is met.
var errTooDeep = errors.New("directory too deep")

func tooDeepErr(name string) error {
	return entryErr(ErrInvalidName, name, " (a directory more than %d levels deep)", MaxPathLen)
}

// errDirNotEmpty: in Rootfs mode, a non-directory entry (file, hardlink,
// symlink, device, FIFO) whose name is a non-empty directory. GNU tar
// refuses it ("Cannot open: File exists") and removes an empty one, and
// so do Validate and Extract (notEmptyErr). In Layer mode the directory
// is removed with its contents instead: an OCI layer replacing a
// directory of its parent with a file says so this way.
var errDirNotEmpty = errors.New("directory not empty")

func notEmptyErr(name string) error {
	return entryErr(ErrInvalidName, name, " (replaces a non-empty directory)")
}

// hardlinkInsideErr: in Layer mode, a hardlink whose name is a directory
// holding its target: removing the directory would remove the target.
func hardlinkInsideErr(name, target string) error {
	return entryErr(ErrInvalidHardlink, name, " -> %s (target inside the directory it replaces)", printable(target))
}

// splitRel splits a cleaned relative path into its directory and last
// component. The root has neither.
func splitRel(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// stripRootfs removes the predecessor's "rootfs/" prefix from a cleaned
// name; ok is false when the name is not under it.
func stripRootfs(rel string) (string, bool) {
	if rel == rootfsDir {
		return "", true
	}
	if rest, ok := strings.CutPrefix(rel, rootfsDir+"/"); ok {
		return rest, true
	}
	return "", false
}

// symlinkEscapes reports whether target, read from a symlink at rel,
// climbs above the root when resolved lexically. Absolute targets are
// taken as relative to the root (that is what they mean once the image is
// the container's "/"), so they never escape.
func symlinkEscapes(rel, target string) bool {
	if strings.HasPrefix(target, "/") {
		return false
	}
	dir, _ := splitRel(rel)
	depth := 0
	if dir != "" {
		depth = strings.Count(dir, "/") + 1
	}
	for _, p := range strings.Split(target, "/") {
		switch p {
		case "", ".":
		case "..":
			if depth == 0 {
				return true
			}
			depth--
		default:
			depth++
		}
	}
	return false
}

// printable quotes names that carry control characters so error messages
// stay on one line and show what was really there.
// Very long names (up to PATH_MAX, or a hostile PAX path of a megabyte)
// are cut, keeping both ends, where ".." tricks usually sit.
func printable(name string) string {
	const keep = 120
	if len(name) > 2*keep+32 {
		name = name[:keep] + "..." + name[len(name)-keep:] + " (" + strconv.Itoa(len(name)) + " bytes)"
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return strconv.Quote(name)
		}
	}
	return name
}
