// Package s3fetch streams image tarballs from S3 (or an S3-compatible
// server) and uploads layers to it.
//
// A download (Client.Open) makes one ranged GET to learn the object's size
// and ETag, then keeps up to Config.Concurrency ranged GETs of
// Config.PartSize bytes running ahead of the reader, each pinned to that
// ETag with If-Match. The reader gets the bytes in order; memory is bounded
// by Concurrency+1 part buffers per download, taken in part order so the
// part the reader waits for always has one. A failed GET (throttling, 5xx,
// connection reset, truncated body, a stall longer than Config.PartTimeout)
// is retried with jittered exponential backoff and resumes from the first
// byte not yet received; the SDK's own retryer is off for GetObject so that
// this logic is the only one. A replaced object fails with ErrObjectChanged
// rather than mixing versions. Config.DownloadTimeout bounds each whole
// download, and Config.DownloadQueueSize bounds how many run at once per
// Client.
//
// Tests run the same suite against an in-process fake and a real versitygw
// gateway, both behind a fault-injecting proxy; see s3fetch/s3test.
package s3fetch
