package extract

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
)

// Sentinel errors. Every error returned by Extract and Validate that is
// caused by the archive itself wraps one of these (test with errors.Is) and,
// where an entry was involved, is an *EntryError naming it. Each sentinel
// also matches the errdefs kind that fits it, so callers that only speak
// errdefs (gRPC status mapping in the snapshotter) classify them right.
var (
	// ErrPathTraversal: an entry name (or hardlink target) with a ".."
	// component. Such names are refused outright, as GNU tar does, rather
	// than cleaned: no legitimate image needs them.
	ErrPathTraversal = newKind("path traversal detected", errdefs.ErrInvalidArgument)
	// ErrInvalidName: empty names, names with NUL, paths of PATH_MAX or
	// more, components longer than NAME_MAX, names that denote the root
	// for a non-directory, in Rootfs mode a non-directory whose name is a
	// non-empty directory.
	ErrInvalidName = newKind("invalid entry name", errdefs.ErrInvalidArgument)
	// ErrHardlinkEscape: a hardlink whose target names something outside
	// the root.
	ErrHardlinkEscape = newKind("hardlink target escapes base directory", errdefs.ErrInvalidArgument)
	// ErrInvalidHardlink: a hardlink whose target does not exist in the
	// root or is a directory, or (Layer mode) is inside the directory the
	// link replaces.
	ErrInvalidHardlink = newKind("invalid hardlink target", errdefs.ErrInvalidArgument)
	// ErrSymlinkEscape: with Options.StrictSymlinks, a symlink whose
	// target climbs above the root.
	ErrSymlinkEscape = newKind("symlink target escapes base directory", errdefs.ErrInvalidArgument)
	// ErrInvalidWhiteout: a whiteout that names ".", ".." or nothing.
	ErrInvalidWhiteout = newKind("invalid whiteout", errdefs.ErrInvalidArgument)
	// ErrInvalidParent: an entry whose parent path does not lead to a
	// directory: it goes through a regular file or other
	// non-directory, through a symlink that leads nowhere, or through a
	// symlink loop (more than 40 symlinks).
	ErrInvalidParent = newKind("invalid parent directory", errdefs.ErrInvalidArgument)
	// ErrOutOfRange: a uid or gid outside 0..4294967294 (2^32-1 is
	// chown's "leave unchanged", which would keep the extractor's own
	// root), or a device number the kernel cannot represent. Never
	// truncated: a setuid file with uid 2^32 would become setuid root.
	ErrOutOfRange = newKind("value out of range", errdefs.ErrInvalidArgument)
	// ErrInvalidXattr: an entry whose SCHILY.xattr.* records break the
	// limits Validate and Extract share (see maxXattrs): more than 128
	// xattrs, a name that is empty, a bare namespace or longer than
	// 255 bytes, a value over 64 KiB, or more than 64 KiB in all.
	ErrInvalidXattr = newKind("invalid xattr", errdefs.ErrInvalidArgument)
	// ErrFileTooLarge: one entry over Options.MaxFileSize.
	ErrFileTooLarge = newKind("file too large", errdefs.ErrOutOfRange)
	// ErrTooManyEntries: more than Options.MaxEntries entries.
	ErrTooManyEntries = newKind("too many entries", errdefs.ErrOutOfRange)
	// ErrArchiveTooLarge: more than Options.MaxTotalSize bytes of file
	// content or of uncompressed stream.
	ErrArchiveTooLarge = newKind("archive too large", errdefs.ErrOutOfRange)
	// ErrTruncated: the stream ended early (inside a header, inside an
	// entry's data, inside the compressed stream, or without the tar
	// end-of-archive marker).
	ErrTruncated = newKind("truncated archive", errdefs.ErrDataLoss)
	// ErrNotTar: the input, once decompressed, does not start with a tar
	// header (a text file, an OCI layout, a zip). Reported instead of
	// ErrTruncated or ErrCorrupt when no entry could be read at all.
	ErrNotTar = newKind("not a tar archive", errdefs.ErrInvalidArgument)
	// ErrCorrupt: a malformed tar header or compressed stream.
	ErrCorrupt = newKind("corrupt archive", errdefs.ErrDataLoss)
	// ErrUnsupportedCompression: bzip2, xz and other formats we do not
	// decode.
	ErrUnsupportedCompression = newKind("unsupported compression", errdefs.ErrNotImplemented)
	// ErrDigestMismatch: the stream did not hash to ExpectedDiffID or
	// ExpectedDigest. The files were written and must be discarded.
	ErrDigestMismatch = newKind("digest mismatch", errdefs.ErrDataLoss)
)

// kindError is a sentinel with a fixed message that also matches an errdefs
// kind, without the kind's text leaking into the message.
type kindError struct {
	msg  string
	kind error
}

func newKind(msg string, kind error) error { return &kindError{msg: msg, kind: kind} }

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// EntryError is an error about one tar entry. Its message is
// "<what>: <entry><detail>", for example
// "path traversal detected: ../etc/passwd" or
// "file too large: big.img: 2147483648 bytes = 2 GiB (max 1073741824 bytes = 1 GiB)".
type EntryError struct {
	// Entry is the entry name as it appears in the archive.
	Entry string
	// Detail is appended after the entry name (may be empty).
	Detail string
	// Err is a sentinel above or an underlying system error.
	Err error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("%s: %s%s", e.Err.Error(), printable(e.Entry), e.Detail)
}

func (e *EntryError) Unwrap() error { return e.Err }

func entryErr(kind error, entry, detailFormat string, args ...any) error {
	return &EntryError{Entry: entry, Detail: fmt.Sprintf(detailFormat, args...), Err: kind}
}

// opError is a failed filesystem operation on an entry: "<op> <entry>: <err>".
type opError struct {
	op    string
	entry string
	err   error
}

func (e *opError) Error() string { return fmt.Sprintf("%s %s: %v", e.op, printable(e.entry), e.err) }
func (e *opError) Unwrap() error { return e.err }

func opErr(op, entry string, err error) error {
	var ee *EntryError
	var oe *opError
	if errors.As(err, &ee) || errors.As(err, &oe) {
		return err
	}
	return &opError{op: op, entry: entry, err: err}
}
