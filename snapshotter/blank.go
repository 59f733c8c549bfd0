package snapshotter

import (
	"fmt"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// LabelBlank asks a parentless Prepare for a blank device: a fresh thin
// device (create_thin) of the containerd.io/snapshot/max-size size, with
// no filesystem, instead of a snapshot of the formatted template. Its
// value is the filesystem the caller will write onto the raw device
// (ext4 or xfs), which the snapshot's mounts then name.
//
// It exists for block-image imports: they write a whole filesystem at
// device offsets, and a blank thin device reads zeros wherever they do
// not write and leaves those blocks unprovisioned; a template snapshot
// would share the template's metadata blocks under the image's, and
// mkfs would have been wasted.
//
// It is under containerd.io/snapshot/ because containerd passes only
// those labels on to a snapshotter (snapshots.FilterInheritedLabels):
// under any other name containerd drops it, and the Prepare silently
// becomes an ordinary one.
const LabelBlank = "containerd.io/snapshot/flyio.blank-device"

// blankFSType returns the filesystem a blank Prepare names, "" for an
// ordinary Prepare. The label is untrusted (any containerd client can
// set it): only a parentless active snapshot of a known filesystem may
// be blank, and never a spare or a remote fill.
func blankFSType(kind snapshots.Kind, parent string, labels map[string]string) (string, error) {
	v, ok := labels[LabelBlank]
	if !ok {
		return "", nil
	}
	if kind != snapshots.KindActive || parent != "" {
		return "", fmt.Errorf("label %s: only a parentless active snapshot can be blank: %w", LabelBlank, errdefs.ErrInvalidArgument)
	}
	if v != "ext4" && v != "xfs" {
		return "", fmt.Errorf("label %s=%q: want ext4 or xfs: %w", LabelBlank, v, errdefs.ErrInvalidArgument)
	}
	return v, nil
}
