// Package blockimage publishes a converted base device to S3 as a block
// image, and fills a fresh thin device from one, so that a host that
// needs an image writes its filesystem at disk speed instead of
// extracting the tarball again.
//
// A block image is a manifest (format v1: docs/s3.md, "Block images")
// and chunk objects under a prefix P (the [s3] block_prefix):
//
//	P + "chunks/sha256/<hex[:2]>/<hex>"   one zstd frame of a chunk's bytes,
//	                                      named by the sha256 of the
//	                                      uncompressed bytes
//	P + "manifests/<sha256 of the tarball key>.json"
//
// Publish cuts the device's mapped extents into chunks of at most
// ChunkSize bytes on a grid over the whole device (so equal data at equal
// offsets gives equal chunks across images), never across a hole, drops
// chunks that are all zeros, uploads the chunks the bucket lacks and puts
// the manifest last. Fill fetches, bounds, verifies and writes chunks in
// parallel, skipping those a journal says are done, and writes nothing
// outside them.
//
// The manifest is untrusted input: ParseManifest and Validate bound its
// size, its chunk count and every field before Fill sizes a buffer from
// it, and a chunk must decompress to exactly its length and digest.
package blockimage
