package extract

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// Extract reads an image tarball (plain tar, gzip or zstd, detected from
// its first bytes) from r and writes its entries under root, which must be
// an existing directory. Nothing is ever written outside root, whatever
// the archive holds: every parent directory is resolved inside root
// (symlinks followed as if root were "/") and the last component is
// created without following symlinks.
//
// The whole input is consumed and hashed, trailing padding included, so
// Result.DiffID and Result.Digest are what sha256sum prints for the
// decompressed and the raw stream. They are filled in even on a digest
// mismatch.
//
// Any error means root holds a partial, unverified tree: the caller must
// discard it (for the snapshotter, the thin device). Errors caused by the
// archive wrap one of the Err* sentinels and name the entry.
func Extract(ctx context.Context, r io.Reader, root string, opts Options) (Result, error) {
	rt, err := openRoot(root, opts.forceWalk)
	if err != nil {
		return Result{}, err
	}
	defer rt.Close()
	s := newDiskSink(rt, opts)
	defer s.close()
	return run(ctx, r, opts, s)
}

// Validate runs every check Extract does (names, limits, hardlink targets,
// whiteouts, compression and tar integrity, digests) and writes nothing.
// In Layer mode a hardlink to a path the layer did not write is assumed to
// point into the parent, which Validate cannot see.
func Validate(ctx context.Context, r io.Reader, opts Options) (Result, error) {
	return run(ctx, r, opts, newModelSink(opts))
}

// extraction is the state of one run.
type extraction struct {
	ctx  context.Context
	opts Options
	sink sink
	res  Result

	src *sourceReader
	dec *decodeReader
	ts  *tarStream
	// head is the first tar block read, to tell "not a tar" from a tar
	// whose first header is damaged.
	head []byte

	content      int64  // sum of entry sizes
	symlinkBytes int64  // sum of symlink target lengths
	last         string // last entry name read, for errors between entries
	current      string

	rootfsDecided bool
	stripRootfs   bool

	// global holds the records of the PAX global headers read so far,
	// applied to every later entry that does not set them itself.
	global map[string]string
}

func run(ctx context.Context, r io.Reader, opts Options, s sink) (Result, error) {
	opts = opts.withDefaults()
	wantDiffID, err := normalizeDigest(opts.ExpectedDiffID)
	if err != nil {
		return Result{}, fmt.Errorf("expected diffID: %w", err)
	}
	wantDigest, err := normalizeDigest(opts.ExpectedDigest)
	if err != nil {
		return Result{}, fmt.Errorf("expected digest: %w", err)
	}
	x := &extraction{ctx: ctx, opts: opts, sink: s}
	x.src = &sourceReader{ctx: ctx, r: r, h: newSHA256(), limit: opts.MaxTotalSize}
	err = x.run()
	if x.dec != nil {
		x.dec.Close() // stops the readahead: x.src is ours again
	}
	x.res.CompressedBytes = x.src.n
	x.res.Digest = digestOf(x.src.h)
	if x.ts != nil {
		x.res.Bytes = x.ts.n
		x.res.DiffID = digestOf(x.ts.h)
	}
	if x.opts.Progress != nil {
		x.opts.Progress(x.progress())
	}
	if err != nil {
		return x.res, err
	}
	if wantDiffID != "" && x.res.DiffID != wantDiffID {
		return x.res, fmt.Errorf("%w: diffID is %s, expected %s", ErrDigestMismatch, x.res.DiffID, wantDiffID)
	}
	if wantDigest != "" && x.res.Digest != wantDigest {
		return x.res, fmt.Errorf("%w: digest is %s, expected %s", ErrDigestMismatch, x.res.Digest, wantDigest)
	}
	return x.res, nil
}

func (x *extraction) progress() Progress {
	p := Progress{CompressedBytes: x.src.n, Entries: x.res.Entries, Entry: x.current}
	if x.ts != nil {
		p.Bytes = x.ts.n
	}
	return p
}

func (x *extraction) run() error {
	br := bufio.NewReaderSize(x.src, 1<<20)
	head, err := br.Peek(512) // a whole tar header: see DetectCompression
	if len(head) == 0 {
		if err == nil || err == io.EOF {
			return fmt.Errorf("%w: empty input", ErrTruncated)
		}
		return x.sourceErr(err)
	}
	comp, err := DetectCompression(head)
	if err != nil {
		return err
	}
	x.res.Compression = string(comp)
	if x.dec, err = decompressor(br, comp); err != nil {
		if x.src.err != nil {
			return x.sourceErr(x.src.err)
		}
		return err
	}
	x.dec.startReadahead(x.src, br)
	x.ts = &tarStream{ctx: x.ctx, r: x.dec, h: newSHA256(), limit: x.opts.MaxTotalSize}
	if x.opts.Progress != nil {
		x.ts.progress = func(int64) { x.opts.Progress(x.progress()) }
	}
	tr := tar.NewReader(&headReader{r: x.ts, head: &x.head})
	for {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			if !x.ts.endMarkerSeen() {
				if x.res.Entries == 0 {
					return fmt.Errorf("%w: no tar end-of-archive marker", ErrTruncated)
				}
				return entryErr(ErrTruncated, x.last, " (stream ends after this entry without the end-of-archive marker)")
			}
			break
		}
		if err != nil {
			return x.readErr(err, x.last, true)
		}
		x.res.Entries++
		x.last, x.current = hdr.Name, hdr.Name
		if x.res.Entries > x.opts.MaxEntries {
			return entryErr(ErrTooManyEntries, hdr.Name, " (max %d)", x.opts.MaxEntries)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			// Not a file: its name (git's "pax_global_header") is
			// neither checked, nor stripped, nor does it decide the
			// rootfs/ layout.
			if err := x.setGlobal(hdr); err != nil {
				return err
			}
			continue
		}
		if err := x.applyGlobal(hdr); err != nil {
			return err
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
		if n := x.res.Entries + x.sink.impliedDirs(); n > x.opts.MaxEntries {
			// Parents no entry names are made (and modelled) too: a
			// few bytes of name can imply 2,000 directories.
			return entryErr(ErrTooManyEntries, hdr.Name, " (max %d, counting %d directories made for parents)", x.opts.MaxEntries, x.sink.impliedDirs())
		}
		x.current = ""
	}
	if err := x.drain(br); err != nil {
		return err
	}
	return x.sink.finish()
}

// drain reads to the end of both streams so the digests cover everything
// `sha256sum` would see: the zero padding after the end-of-archive marker
// (tar pads to 10 KiB records) and whatever the compressor put after its
// last frame. Non-zero data after the marker is not extracted (other tar
// readers would not either, without -i) but is reported.
func (x *extraction) drain(br *bufio.Reader) error {
	nz := &nonZero{}
	if _, err := io.Copy(nz, x.ts); err != nil {
		return x.readErr(err, x.last, true)
	}
	if nz.seen {
		x.opts.warn("ignoring non-zero data after the tar end-of-archive marker (after %s)", x.last)
	}
	if x.dec.compressed {
		if err := x.dec.drainSource(br); err != nil {
			return x.sourceErr(err)
		}
	}
	return nil
}

type nonZero struct{ seen bool }

func (n *nonZero) Write(p []byte) (int, error) {
	if !n.seen {
		for _, b := range p {
			if b != 0 {
				n.seen = true
				break
			}
		}
	}
	return len(p), nil
}

func (x *extraction) sourceErr(err error) error {
	if errors.Is(err, ErrArchiveTooLarge) || x.ctx.Err() != nil {
		return err
	}
	return fmt.Errorf("read archive: %w", err)
}

// readErr turns an error met while reading the streams into one that says
// what failed (source, limit, decompression, tar) and where.
func (x *extraction) readErr(err error, name string, betweenEntries bool) error {
	if cerr := x.ctx.Err(); cerr != nil {
		return cerr
	}
	where := ""
	firstHeader := false
	if betweenEntries {
		where = " (reading the next header)"
		if name == "" {
			name, where = "<start of archive>", ""
			firstHeader = x.res.Entries == 0 && !looksLikeTarHeader(x.head)
		}
	}
	var le *limitError
	switch {
	case x.src.err != nil && errors.As(x.src.err, &le):
		return &EntryError{Entry: name, Detail: where + ": " + le.msg, Err: ErrArchiveTooLarge}
	case x.src.err != nil:
		return fmt.Errorf("read archive at %s: %w", printable(name), x.src.err)
	case x.ts != nil && x.ts.err != nil && errors.As(x.ts.err, &le):
		return &EntryError{Entry: name, Detail: where + ": " + le.msg, Err: ErrArchiveTooLarge}
	case x.dec != nil && x.dec.err != nil && x.dec.compressed:
		kind := ErrCorrupt
		if errors.Is(x.dec.err, io.ErrUnexpectedEOF) {
			kind = ErrTruncated
		}
		return &EntryError{Entry: name, Detail: where + ": compressed stream: " + x.dec.err.Error(), Err: kind}
	case firstHeader:
		return notTar(x.res.Compression)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &EntryError{Entry: name, Detail: where, Err: ErrTruncated}
	}
	return &EntryError{Entry: name, Detail: where + ": " + err.Error(), Err: ErrCorrupt}
}

// dataReader wraps the tar reader for one entry and remembers read errors,
// so a failure inside the sink's copy is reported as the archive's fault
// (truncated, corrupt) rather than as a write error.
type dataReader struct {
	r   io.Reader
	err error
}

func (d *dataReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.err == nil {
		d.err = err
	}
	return n, err
}

func (x *extraction) entry(hdr *tar.Header, tr *tar.Reader) error {
	name := hdr.Name
	rel, err := cleanName(name, ErrPathTraversal)
	if err != nil {
		return err
	}
	if (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) && strings.HasSuffix(name, "/") {
		// Old tars mark directories with a trailing slash alone, and GNU
		// tar reads a regular file so named as one. With data it is
		// neither.
		if hdr.Size != 0 {
			return entryErr(ErrInvalidName, name, " (a regular file with %d bytes of data, named like a directory)", hdr.Size)
		}
		hdr.Typeflag = tar.TypeDir
	}
	if rel, err = x.rootfsPrefix(name, rel, hdr.Typeflag); err != nil {
		return err
	}
	if hdr.Size < 0 {
		return entryErr(ErrCorrupt, name, " (negative size)")
	}
	if err := checkIDs(name, hdr); err != nil {
		return err
	}
	if err := checkXattrs(name, hdr); err != nil {
		return err
	}
	if hdr.Size > x.opts.MaxFileSize {
		return entryErr(ErrFileTooLarge, name, ": %s (max %s)", ExactSize(hdr.Size), ExactSize(x.opts.MaxFileSize))
	}
	x.content += hdr.Size
	if x.content > x.opts.MaxTotalSize {
		return entryErr(ErrArchiveTooLarge, name, ": %s of content so far (max %s)", ExactSize(x.content), ExactSize(x.opts.MaxTotalSize))
	}
	e := &entry{name: name, rel: rel, hdr: hdr}

	dir, base := splitRel(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return x.whiteout(e, dir, base)
	}
	if rel == "" && hdr.Typeflag != tar.TypeDir {
		return entryErr(ErrInvalidName, name, " (a non-directory entry naming the root)")
	}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		d := &dataReader{r: tr}
		if err := x.sink.file(e, d); err != nil {
			if d.err != nil {
				return x.readErr(d.err, name, false)
			}
			return err
		}
		return nil
	case tar.TypeDir:
		return x.sink.dir(e)
	case tar.TypeSymlink:
		if err := x.checkSymlink(e); err != nil {
			return err
		}
		return x.sink.symlink(e)
	case tar.TypeLink:
		target, err := x.linkTarget(e)
		if err != nil {
			return err
		}
		return x.sink.hardlink(e, target)
	case tar.TypeFifo:
		// Harmless (a name, no access to anything) and part of real
		// images; created always.
		return x.sink.node(e)
	case tar.TypeChar, tar.TypeBlock:
		if !x.opts.AllowDevices {
			x.skip(name, "device (AllowDevices is off)")
			return nil
		}
		return x.sink.node(e)
	}
	x.skip(name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
	return nil
}

func (x *extraction) skip(name, why string) {
	x.res.Skipped = append(x.res.Skipped, name)
	x.opts.warn("skipping %s: %s", printable(name), why)
}

// rootfsPrefix recognises the predecessor's layout (everything under
// "rootfs/") from the first entry other than the root itself, and from
// then on strips the prefix, refusing entries outside it.
func (x *extraction) rootfsPrefix(name, rel string, typ byte) (string, error) {
	if x.opts.Mode != Rootfs {
		return rel, nil
	}
	if !x.rootfsDecided && rel != "" {
		x.rootfsDecided = true
		x.stripRootfs = strings.HasPrefix(rel, rootfsDir+"/") || (rel == rootfsDir && typ == tar.TypeDir)
		if x.stripRootfs {
			x.res.StrippedPrefix = rootfsDir + "/"
		}
	}
	if !x.stripRootfs || rel == "" {
		return rel, nil
	}
	out, ok := stripRootfs(rel)
	if !ok {
		return "", entryErr(ErrInvalidName, name, " (outside the rootfs/ directory the archive starts with)")
	}
	return out, nil
}

// whiteout handles an entry whose last component starts with ".wh.".
func (x *extraction) whiteout(e *entry, dir, base string) error {
	if base == whiteoutOpaque {
		if x.opts.Mode != Layer {
			x.skip(e.name, "opaque whiteout in a flattened rootfs")
			return nil
		}
		return x.sink.opaque(e, dir)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		x.skip(e.name, "aufs metadata")
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return entryErr(ErrInvalidWhiteout, e.name, " (whites out %q)", target)
	}
	if x.opts.Mode != Layer {
		x.skip(e.name, "whiteout in a flattened rootfs")
		return nil
	}
	return x.sink.whiteout(e, dir, target)
}

func (x *extraction) checkSymlink(e *entry) error {
	t := e.hdr.Linkname
	if t == "" {
		return entryErr(ErrInvalidName, e.name, " (empty symlink target)")
	}
	if strings.IndexByte(t, 0) >= 0 {
		return entryErr(ErrInvalidName, e.name, " (NUL in symlink target)")
	}
	if len(t) >= MaxPathLen {
		return entryErr(ErrInvalidName, e.name, " (symlink target of 4096 bytes or more)")
	}
	// Validate keeps every target to resolve paths through it; the
	// total is bounded so that memory stays bounded, and Extract refuses
	// the same archives.
	x.symlinkBytes += int64(len(t))
	if x.symlinkBytes > maxSymlinkTargets {
		return entryErr(ErrArchiveTooLarge, e.name, ": symlink targets total more than %s", ExactSize(maxSymlinkTargets))
	}
	if x.opts.StrictSymlinks && symlinkEscapes(e.rel, t) {
		return entryErr(ErrSymlinkEscape, e.name, " -> %s", printable(t))
	}
	return nil
}

// linkTarget checks and cleans a hardlink's target name. The target must
// stay inside the root lexically; whether it exists (and is not a
// directory) is the sink's check, done after resolving it inside the
// root.
func (x *extraction) linkTarget(e *entry) (string, error) {
	t := e.hdr.Linkname
	rel, err := cleanName(t, ErrHardlinkEscape)
	if err != nil {
		var ee *EntryError
		if errors.As(err, &ee) {
			// Name the link, show the target.
			return "", &EntryError{Entry: e.name, Detail: " -> " + printable(t) + ee.Detail, Err: ee.Err}
		}
		return "", err
	}
	if x.stripRootfs {
		out, ok := stripRootfs(rel)
		if !ok {
			return "", entryErr(ErrHardlinkEscape, e.name, " -> %s (outside rootfs/)", printable(t))
		}
		rel = out
	}
	if rel == "" {
		return "", entryErr(ErrInvalidHardlink, e.name, " -> %s (target is the root)", printable(t))
	}
	return rel, nil
}

// Ranges of the numbers an entry hands to the kernel. uid_t and gid_t are
// 32 bits and (uid_t)-1 means "unchanged" to chown; dev_t reaches mknod as
// 32 bits, 12 of major and 20 of minor. Values outside are refused, as GNU
// tar does ("value out of uid_t range"), never truncated.
const (
	maxID       = 1<<32 - 2
	maxDevMajor = 1<<12 - 1
	maxDevMinor = 1<<20 - 1
)

func checkIDs(name string, hdr *tar.Header) error {
	if hdr.Uid < 0 || int64(hdr.Uid) > maxID {
		return entryErr(ErrOutOfRange, name, ": uid %d (allowed 0..%d)", hdr.Uid, int64(maxID))
	}
	if hdr.Gid < 0 || int64(hdr.Gid) > maxID {
		return entryErr(ErrOutOfRange, name, ": gid %d (allowed 0..%d)", hdr.Gid, int64(maxID))
	}
	if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
		if hdr.Devmajor < 0 || hdr.Devmajor > maxDevMajor {
			return entryErr(ErrOutOfRange, name, ": device major %d (allowed 0..%d)", hdr.Devmajor, maxDevMajor)
		}
		if hdr.Devminor < 0 || hdr.Devminor > maxDevMinor {
			return entryErr(ErrOutOfRange, name, ": device minor %d (allowed 0..%d)", hdr.Devminor, maxDevMinor)
		}
	}
	return nil
}

// maxSymlinkTargets bounds the sum of the lengths of all symlink targets
// in one archive. Real images have kilobytes of them (tens of MB for the
// largest Nix closures); Validate keeps them all.
const maxSymlinkTargets = 64 << 20

// parentErr is the error for an entry whose parent does not resolve to a
// directory, from the model's errors or the kernel's, worded the same.
func parentErr(name string, err error) error {
	switch {
	case errors.Is(err, errNotDir) || errors.Is(err, unix.ENOTDIR):
		return entryErr(ErrInvalidParent, name, " (a component of its directory is not a directory)")
	case errors.Is(err, errDangling) || errors.Is(err, unix.ENOENT):
		return entryErr(ErrInvalidParent, name, " (a symlink in its directory leads nowhere)")
	case errors.Is(err, errLoop) || errors.Is(err, unix.ELOOP):
		return entryErr(ErrInvalidParent, name, " (a symlink loop, or more than 40 symlinks, in its directory)")
	}
	return nil
}
