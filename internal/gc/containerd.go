package gc

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Containerd is what gc asks containerd.
type Containerd interface {
	// Snapshots lists, per namespace, containerd's snapshots in our
	// snapshotter by their containerd names.
	Snapshots(ctx context.Context) (map[string]map[string]snapshots.Info, error)
	// Remove removes containerd's record of snapshot name in namespace ns
	// (its backend removal follows through us).
	Remove(ctx context.Context, ns, name string) error
}

// ClientFunc hands out a containerd client (the daemon's shared one, or a
// new one for the offline command).
type ClientFunc func(ctx context.Context) (*client.Client, error)

// NewContainerd returns a Containerd over the snapshotter called
// snapshotter ([proxy_plugins.<name>]).
func NewContainerd(get ClientFunc, snapshotter string) Containerd {
	return &containerdClient{get: get, snapshotter: snapshotter}
}

type containerdClient struct {
	get         ClientFunc
	snapshotter string
}

// callTimeout bounds each containerd call: a containerd that does not
// answer must not hang gc.
const callTimeout = 15 * time.Second

func (c *containerdClient) Snapshots(ctx context.Context) (map[string]map[string]snapshots.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cli, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	nss, err := cli.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing containerd namespaces: %w", err)
	}
	out := make(map[string]map[string]snapshots.Info, len(nss))
	for _, ns := range nss {
		snaps := map[string]snapshots.Info{}
		err := cli.SnapshotService(c.snapshotter).Walk(namespaces.WithNamespace(ctx, ns), func(_ context.Context, info snapshots.Info) error {
			snaps[info.Name] = info
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing containerd's %s snapshots in namespace %q: %w", c.snapshotter, ns, err)
		}
		out[ns] = snaps
	}
	return out, nil
}

func (c *containerdClient) Remove(ctx context.Context, ns, name string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cli, err := c.get(ctx)
	if err != nil {
		return err
	}
	return cli.SnapshotService(c.snapshotter).Remove(namespaces.WithNamespace(ctx, ns), name)
}
