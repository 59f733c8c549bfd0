package snapshotter

import (
	"context"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// Pool is the part of *dmpool.Pool the snapshotter uses. It is an
// interface so that fast unit tests can run on machines without
// device-mapper; the proof that it works is the VM tests on dmpool.Pool.
type Pool interface {
	Name() string
	CreateThin(ctx context.Context, id uint32) error
	CreateSnapshot(ctx context.Context, id, originID uint32) error
	Activate(ctx context.Context, name string, id uint32, size uint64) (string, error)
	// ActivateWithOrigin and ReloadOrigin: devices of lazily-backed
	// bases, whose tables name an external origin (origin.go).
	ActivateWithOrigin(ctx context.Context, name string, id uint32, size uint64, origin string) (string, error)
	ReloadOrigin(ctx context.Context, name, origin string) error
	Deactivate(ctx context.Context, name string) error
	Delete(ctx context.Context, id uint32) error
	Discard(ctx context.Context, name string, id uint32, size uint64) error
	ThinStatus(ctx context.Context, name string) (dmpool.ThinStatus, error)
	// Events is the pool's status with its device-mapper event counter
	// (the trouble watch, trouble.go).
	Events(ctx context.Context) (dmpool.Status, error)
}

var _ Pool = (*dmpool.Pool)(nil)
