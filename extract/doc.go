// Package extract turns an image tarball into files under a target root,
// and refuses archives that try to do anything else.
//
// It is the only code in flyio-image-manager that writes image content:
// the snapshotter runs it to fill a freshly created thin device, and the
// CLI's `extract` and `validate` commands call it directly.
//
//	res, err := extract.Extract(ctx, body, "/mnt/dev-123", extract.Options{
//		Mode:           extract.Rootfs,
//		ExpectedDiffID: "sha256:...",
//	})
//	if err != nil { /* discard the device: it holds a partial tree */ }
//
// # Containment
//
// Nothing outside the root can be written, by construction rather than by
// checking names: each entry's parent directory is opened with openat2
// (RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS), or on kernels without it by an
// equivalent userspace walk that opens one component at a time with
// O_NOFOLLOW and splices symlink targets in as if the root were "/". The
// last component is then created relative to that directory's fd with
// calls that do not follow it (mkdirat, openat O_CREAT|O_EXCL|O_NOFOLLOW,
// symlinkat, linkat, mknodat, fchownat/utimensat AT_SYMLINK_NOFOLLOW, and
// fchmod/fsetxattr on the new file's own fd). So a symlink planted by an
// earlier entry, or by a lower layer (CVE-2025-45582), resolves back
// inside the root, and writing "over" a symlink or a hardlinked file
// replaces it instead of writing through it.
//
// # What is refused
//
// Errors wrap a sentinel (errors.Is) and, for entry problems, are
// *EntryError values naming the entry:
//
//   - any ".." component in a name ("path traversal detected: <name>");
//     GNU tar also refuses these, and cleaning them would only invite
//     ambiguity. Leading "/" and "./" are dropped: absolute names mean the
//     same as relative ones.
//   - NUL in a name, names of PATH_MAX (4096) bytes or more, components
//     over NAME_MAX (255), empty names, non-directories naming the root.
//   - an entry whose directory does not resolve to one: through a regular
//     file or other non-directory, a symlink that leads nowhere, or a
//     symlink loop (more than 40 symlinks) ("invalid parent directory").
//     Missing parents are made (mode 0755) and count as entries against
//     MaxEntries.
//   - a regular file whose name ends in "/" and that has data; without
//     data it is a directory, as in GNU tar.
//   - more than 64 MiB of symlink targets in all (Validate keeps them).
//   - hardlinks whose target has "..", is outside "rootfs/" when that
//     prefix is stripped, does not exist in the root (resolved like any
//     other path, inside the root), or is a directory. A hardlink to a
//     symlink links the symlink itself.
//   - with StrictSymlinks, symlinks whose relative target climbs above the
//     root. Otherwise targets are stored verbatim (images need
//     "/bin/sh -> /bin/busybox"); they are never followed out of the root
//     here.
//   - whiteouts of "", "." or ".." (".wh...").
//   - uid or gid outside 0..4294967294 and device numbers mknod cannot
//     carry (major over 4095, minor over 1048575), naming the entry, as
//     GNU tar does: never truncated (uid 2^32 would become root).
//   - entries over MaxFileSize (default 1 GiB), more than MaxEntries
//     (default 1,000,000) entries, more than MaxTotalSize (default 64 GiB)
//     of content or of uncompressed stream (which also bounds decompression
//     bombs made of padding), a zstd window over 128 MiB.
//   - truncated input (inside a header, inside data, inside the compressed
//     stream, or a plain tar without its end-of-archive marker), corrupt
//     headers and corrupt compressed data; bzip2 and xz.
//   - a digest mismatch against ExpectedDiffID / ExpectedDigest (checked
//     after the whole stream, trailing padding included, has been hashed).
//
// # Choices
//
//   - In Layer mode, a non-directory replacing a directory (of this
//     layer or of its parent) removes the directory recursively, with
//     fd-relative unlinkat calls that never enter symlinks; this is what
//     OCI layers need. A hardlink whose target is inside that directory
//     is refused. In Rootfs mode, as GNU tar, an empty directory is
//     replaced and a non-empty one refused ("replaces a non-empty
//     directory"). A directory over an existing directory keeps its
//     contents and takes the new metadata.
//   - Owner, mode (setuid/setgid/sticky included, applied after chown,
//     which clears them), mtime/atime and PAX SCHILY.xattr.* records are
//     kept. Directory modes and times are applied at the end, after their
//     contents. trusted.* xattrs are dropped (they belong to the host, e.g.
//     overlayfs). An entry's xattrs are bounded (ErrInvalidXattr: 128, of
//     64 KiB in all, names of 1..255 bytes), in Validate as in Extract;
//     security.capability and the POSIX ACLs (system.posix_acl_access,
//     system.posix_acl_default) must be values the kernel takes (see
//     checkACL: a default ACL only on a directory, named ids in
//     0..4294967294).
//     As non-root, ownership that cannot be given away is
//     left as the caller's with one warning.
//   - Device nodes are created only with AllowDevices; otherwise they are
//     skipped, warned about and listed in Result.Skipped. FIFOs are always
//     created.
//   - A first block that is a tar header with a valid checksum makes the
//     input a plain tar, whatever compression magic its first name
//     starts with.
//   - In Rootfs mode, an archive whose first entry is "rootfs/" (the
//     predecessor's layout) has that prefix stripped, and every other
//     entry must be under it; whiteouts are skipped. In Layer mode,
//     ".wh.<name>" removes <name> and ".wh..wh..opq" empties its directory
//     of everything this layer did not itself write.
//   - PAX global headers (the first header of every `git archive`) are
//     not entries: their name is not checked and does not decide the
//     rootfs/ layout. Their uid, gid, uname, gname, mtime, atime and
//     SCHILY.xattr.* records apply to every later entry that does not set
//     them itself, as in GNU tar; path, linkpath, size and other records
//     that would rewrite every entry are ignored with a warning.
//   - Sparse entries (GNU and PAX) keep their holes: block-aligned runs
//     of zeros are not written, and the file gets its logical size, which
//     is the size counted against MaxFileSize and MaxTotalSize.
//   - Data after the tar end-of-archive marker is hashed but never
//     extracted; non-zero data there is warned about.
//
// # One set of rules
//
// Validate decides every entry as Extract does on an empty root (a fresh
// device; in Layer mode, an empty parent): its model of the tree resolves
// paths with the kernel's RESOLVE_IN_ROOT rules, and the differential test
// (differential_test.go, in `go test`) runs the hostile, containerd and fuzz
// corpora through both and requires the same verdict. In Layer mode,
// Validate assumes paths the layer did not write may be directories in the
// parent and hardlink targets it did not write may exist there.
//
// Both keep memory bounded by the number of entries, never by the length
// of names: Validate's model stores a type byte and a 128-bit hash per path
// (and the bounded symlink targets), Extract stores directory metadata by
// inode and, in Layer mode, hashes of the paths it wrote. Path resolution
// costs the number of components looked at, so it is linear in the
// archive: Validate resolves each symlink once, and again only after
// something its resolution went through is replaced (in Layer mode, also
// after the layer makes a name it looked for in the unseen parent). An
// archive that replaces such a node between entries makes each entry
// cost a full walk again, at most 40 symlinks of 2,048 components; the
// kernel's openat2 walks as much for Extract on every such entry.
//
// Any error leaves the root in an unspecified partial state: the caller
// must discard it.
package extract
