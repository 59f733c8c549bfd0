package layerstore

import "github.com/superfly/flyio-image-manager/snapshotter"

// The store is what the snapshotter fills layers from; the assertion
// lives in a test so that layerstore does not import the snapshotter.
var _ snapshotter.RemoteLayers = (*Store)(nil)
