package gc

import (
	"context"
	"fmt"
	"strings"
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

// references is what containerd's namespaces hold of our snapshots.
// containerd maps each of its snapshots to one of our keys (its "backend
// key", "<ns>/<seq>/<name>" or a remote fill's "remote/<ref>"), but its
// API shows only its own names, and a key one namespace made can be the
// one another namespace adopted. So a key is used while any snapshot of
// any namespace has its name (or, for a remote fill, its snapshot.ref).
// The metadata.LabelBackendKey label our Stat adds is not trusted for
// this: containerd's own copy of a label wins over ours in its Walk, so a
// client (or a stale copy) can make it name another key. Two keys of one
// name are both kept while the name is in use: a leak, never a loss.
type references struct {
	byNS map[string]map[string]snapshots.Info
	used map[string]bool // names and snapshot.ref targets in any namespace
}

func newReferences(byNS map[string]map[string]snapshots.Info) *references {
	r := &references{byNS: byNS, used: map[string]bool{}}
	for _, snaps := range byNS {
		for name, info := range snaps {
			r.used[name] = true
			if ref := info.Labels[snapshots.LabelSnapshotRef]; ref != "" {
				r.used[ref] = true
			}
		}
	}
	return r
}

// uses reports whether any namespace's snapshot may be backend key key.
func (r *references) uses(key string) bool {
	name := backendName(key)
	return name == "" || r.used[name]
}

// has reports whether namespace ns has a snapshot called name.
func (r *references) has(ns, name string) bool {
	if r == nil {
		return false
	}
	_, ok := r.byNS[ns][name]
	return ok
}

func (r *references) namespaces() int { return len(r.byNS) }

// backendName is the containerd name our key stands for: "<name>" of
// containerd's "<ns>/<seq>/<name>", the ref of a remote fill
// "remote/<ref>"; "" for keys of neither form.
func backendName(key string) string {
	if _, name, ok := splitBackendKey(key); ok {
		return name
	}
	if ref, ok := strings.CutPrefix(key, "remote/"); ok && ref != "" {
		return ref
	}
	return ""
}

// UsedByContainerd asks containerd whether any of its namespaces uses
// our snapshot key (see references). For removals outside a gc plan,
// such as delete-image's base.
func UsedByContainerd(ctx context.Context, cd Containerd, key string) (bool, error) {
	if cd == nil {
		return false, fmt.Errorf("no containerd configured")
	}
	snaps, err := cd.Snapshots(ctx)
	if err != nil {
		return false, err
	}
	return newReferences(snaps).uses(key), nil
}
