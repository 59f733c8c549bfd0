package snapshotter

import (
	"context"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log"
)

// Log fields. Every line logged during a snapshot operation carries the
// snapshot key (and parent, for a child), and from the moment its thin
// device is known the device id and dm name, so one snapshot can be
// followed through the log; with log_format = "json" they are separate
// keys a log pipeline can index.
const (
	fieldKey      = "key"
	fieldParent   = "parent"
	fieldName     = "name" // the committed name of a Commit
	fieldDeviceID = "device_id"
	fieldDevice   = "device"
	fieldTemplate = "template"
	fieldRef      = "ref" // the chain id of a remote layer fill
)

// withFields returns ctx whose logger adds fields.
func withFields(ctx context.Context, fields log.Fields) context.Context {
	return log.WithLogger(ctx, log.G(ctx).WithFields(fields))
}

// withSnapshot adds the snapshot key and, when set, its parent.
func withSnapshot(ctx context.Context, key, parent string) context.Context {
	f := log.Fields{fieldKey: key}
	if parent != "" {
		f[fieldParent] = parent
	}
	return withFields(ctx, f)
}

// withDevice adds thin device id and its dm name.
func (s *Snapshotter) withDevice(ctx context.Context, id uint32) context.Context {
	return withFields(ctx, log.Fields{fieldDeviceID: id, fieldDevice: s.deviceName(id)})
}

// kindName is a snapshot kind as ctr's filters spell it ("active").
func kindName(k snapshots.Kind) string { return strings.ToLower(k.String()) }
