// Package lazy serves a base's thin device its blocks before the block
// image is fetched: each "origin" is a block image (package blockimage)
// exposed as a read-only block device, first served by this process
// (AttachServed: nbd) from a local cache that fetches chunks as they are
// read and in the background, then, once every chunk is local, as a
// plain device over the cache file (AttachFile: loop). The caller makes
// the base's thin device use the origin as its external origin and moves
// its tables from the served to the file device when told (OnSwitch).
//
// # Layout
//
// Config.Dir/<name>/ holds manifest.json (the block image's manifest),
// cache (a sparse file of the device's size: chunk i is written only at
// its own range, so everything else reads zeros) and present (one bit
// per chunk). A new origin's directory is built under a temporary name,
// synced and renamed into place.
//
// # Threat model
//
// Manifests come from a bucket other hosts write, and Dir is writable by
// the operator: neither is trusted to be well formed. Names are checked
// (ValidateName) before they become paths; a stored manifest is parsed
// again with blockimage.ParseManifest at every Open, so the bounds on
// sizes and chunk counts that size our buffers and files hold; cache and
// present must have the sizes the manifest implies and be regular files
// (opened O_NOFOLLOW). A directory that fails any check is reported as
// broken in Status and never deleted or repaired: it may be evidence.
// Chunk objects are verified against their digests (blockimage.FetchChunk)
// before a byte of them is written. The bytes of the cache file are
// trusted as any local disk is: whoever can rewrite them can rewrite the
// pool's data device too, so they are not verified again at Open.
//
// # Crash argument
//
// A chunk's bit is set only after its bytes were written and
// fdatasynced, by a one-byte pwrite (which no crash tears) followed by
// its own fdatasync: after any crash, a set bit names bytes on disk. A
// crash between the two leaves a chunk written but unmarked, fetched and
// written again (to the same bytes) later. Bits are never cleared and a
// chunk's bytes never change, so a read that saw a chunk present sees
// the same bytes forever. The switch syncs the cache file before the
// file device is attached, and the served device is closed only after
// OnSwitch reloaded the tables: a crash at any point leaves tables on a
// device that has (or can serve) every byte. After a restart a complete
// bitmap is attached straight as a file device, a partial one served
// again with its prefetch resumed from the bitmap.
package lazy
