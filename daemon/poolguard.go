package daemon

import "github.com/superfly/flyio-image-manager/snapshotter"

// The pool-full guard lives beside the pool the snapshotter uses
// (snapshotter/poolguard.go). These names stay only so that backend.go,
// which another change of issue 14 rewrites, compiles unchanged; new
// code uses the snapshotter's.
type PoolGuard = snapshotter.PoolGuard

// FullError is snapshotter.FullError.
var FullError = snapshotter.FullError
