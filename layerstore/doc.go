// Package layerstore keeps image layers in S3 so that a host can fill
// layer snapshots from the bucket instead of downloading them from a
// registry. Store implements snapshotter.RemoteLayers.
//
// # Key layout
//
// Under the [s3] layer_prefix (P) of the bucket:
//
//	P + "blobs/sha256/<hex>"    the layer blob exactly as the registry serves
//	                            it (usually tar+gzip), named by its digest
//	P + "diffids/sha256/<hex>"  a small JSON pointer named by the layer's diff
//	                            id (the digest of the uncompressed tar):
//	                            {"digest": "sha256:…", "media_type": "…", "size": N}
//
// Blobs are keyed like a registry's, so pushing the same layer from two
// images stores it once. The pointer exists because a Prepare only carries
// the blob digest when CRI pulls (containerd.io/snapshot/cri.layer-digest);
// containerd's own unpacker (ctr, the transfer service) labels the snapshot
// with the diff id alone.
//
// # Lookup
//
// Open tries the cri.layer-digest label first (blob key directly), then the
// diff-id label (pointer, then blob). Both must be "sha256:" and 64
// lowercase hex digits before any key is built from them; a malformed label
// is an error, never a request. A missing object is not an error: Open
// answers ok=false and containerd downloads the layer as usual.
//
// The blob's integrity is checked where it matters: the snapshotter
// extracts it with the diff id from the Prepare labels as the expected
// digest of the uncompressed stream, so a wrong or corrupt blob fails the
// fill (and containerd then fetches the layer itself) rather than producing
// a snapshot under the wrong chain id.
package layerstore
