package extract

import "fmt"

// Mode says how entries are applied to the target root.
type Mode int

const (
	// Rootfs extracts a flattened root filesystem. If the first entry is a
	// top-level "rootfs" directory (or lies under "rootfs/"), the archive
	// is in the predecessor's layout: every entry must then lie under
	// "rootfs/", and that prefix is stripped. Whiteout entries are skipped
	// (with a warning): a flattened image has nothing below it to hide.
	Rootfs Mode = iota
	// Layer applies an OCI layer onto the parent already present in the
	// target root: ".wh.<name>" removes <name>, ".wh..wh..opq" empties its
	// directory of everything not written by this same layer. Whiteout
	// files themselves are never written.
	Layer
)

func (m Mode) String() string {
	switch m {
	case Rootfs:
		return "rootfs"
	case Layer:
		return "layer"
	}
	return "unknown"
}

// Defaults for the zero values in Options. They are generous for real
// images (the largest files in practice are model weights and JVM
// bundles well under 1 GiB each) and still bound what a hostile archive can
// make us write or hash.
const (
	DefaultMaxFileSize  int64 = 1 << 30 // 1 GiB per entry
	DefaultMaxTotalSize int64 = 64 << 30
	DefaultMaxEntries         = 1_000_000
)

// Limits that are not options: the kernel's.
const (
	// MaxPathLen is PATH_MAX: names of this many bytes or more (after the
	// optional "rootfs/" prefix is stripped) are refused, since no syscall
	// could name them in one piece.
	MaxPathLen = 4096
	// MaxNameLen is NAME_MAX: the longest single path component.
	MaxNameLen = 255
)

// Options tune Extract and Validate. The zero value is ready to use:
// Rootfs mode with the default limits, devices skipped.
type Options struct {
	// Mode is Rootfs (default) or Layer.
	Mode Mode
	// MaxFileSize bounds each entry's size (0: DefaultMaxFileSize).
	MaxFileSize int64
	// MaxTotalSize bounds both the sum of entry sizes and the number of
	// bytes in the uncompressed stream, trailing padding included
	// (0: DefaultMaxTotalSize). The second bound is what stops a
	// decompression bomb made of padding.
	MaxTotalSize int64
	// MaxEntries bounds the number of entries (0: DefaultMaxEntries).
	MaxEntries int
	// StrictSymlinks also refuses symlinks whose target climbs above the
	// root, resolved lexically from the link's directory ("/a" ->
	// "../../etc/passwd"). Absolute targets are read as relative to the
	// root and always pass. Without it, targets are stored verbatim
	// whatever they say: they are never followed out of the root here,
	// and inside the image's own mount namespace they are harmless.
	StrictSymlinks bool
	// AllowDevices creates character and block devices. Otherwise they
	// are skipped with a warning and listed in Result.Skipped. FIFOs are
	// always created: they give access to nothing.
	AllowDevices bool
	// ExpectedDiffID, when set, is the sha256 the uncompressed tar stream
	// must hash to ("sha256:<hex>" or bare hex).
	ExpectedDiffID string
	// ExpectedDigest, when set, is the sha256 the stream as read (the
	// compressed blob) must hash to.
	ExpectedDigest string
	// Progress, when set, is called as the stream is consumed (at most
	// every few MiB and once at the end) from the extracting goroutine.
	Progress func(Progress)
	// IgnoreChownErrors turns chown failures (EPERM, EINVAL) into a single
	// warning even when running as root, for root in a user namespace
	// without a full ID map. Callers that are not root get this anyway.
	IgnoreChownErrors bool
	// Warn, when set, receives one line per thing that was skipped or
	// could not be kept (a device, a trusted.* xattr, an ownership change
	// refused to a non-root caller).
	Warn func(string)

	// forceWalk makes the resolver use the userspace walk even where
	// openat2 exists, so tests cover both paths.
	forceWalk bool
	// emptyParent tells Validate in Layer mode that the parent is empty,
	// so it judges like Extract onto an empty root (the differential
	// test). Without it, paths the layer did not write may be in the
	// parent and are given the benefit of the doubt.
	emptyParent bool
}

// Progress is a snapshot of how far the stream has been read.
type Progress struct {
	// CompressedBytes read from the input so far.
	CompressedBytes int64
	// Bytes of uncompressed tar stream read so far.
	Bytes int64
	// Entries processed so far.
	Entries int
	// Entry is the name of the entry being processed, if any.
	Entry string
}

// Result describes a finished (or failed) extraction.
type Result struct {
	// DiffID is "sha256:<hex>" of the whole uncompressed tar stream,
	// trailing padding included: what `sha256sum` prints for the
	// decompressed file.
	DiffID string
	// Digest is "sha256:<hex>" of the stream as read. It equals DiffID
	// when the input was not compressed.
	Digest string
	// Compression is "none", "gzip" or "zstd".
	Compression string
	// Entries is the number of tar entries read (skipped ones included).
	Entries int
	// Bytes is the size of the uncompressed stream, CompressedBytes of
	// the input.
	Bytes, CompressedBytes int64
	// StrippedPrefix is "rootfs/" when the predecessor's layout was
	// recognised, else empty.
	StrippedPrefix string
	// Skipped lists entries that were read but not written (devices
	// without AllowDevices, whiteouts in Rootfs mode, unknown types).
	Skipped []string
}

func (o Options) withDefaults() Options {
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = DefaultMaxFileSize
	}
	if o.MaxTotalSize <= 0 {
		o.MaxTotalSize = DefaultMaxTotalSize
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	return o
}

func (o Options) warn(format string, args ...any) {
	if o.Warn != nil {
		o.Warn(fmt.Sprintf(format, args...))
	}
}
