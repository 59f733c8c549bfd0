package admin

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
)

// InventoryBackend lists what the daemon holds: imported images, the
// snapshot tree, and a diagnostics bundle.
type InventoryBackend interface {
	Images(ctx context.Context) ([]ImageInfo, error)
	Snapshots(ctx context.Context) (SnapshotTree, error)
	// Diag gathers the daemon's side of a diagnostics bundle. A part that
	// cannot be gathered is an error note in the bundle, never an error
	// of the call.
	Diag(ctx context.Context) ([]DiagFile, error)
	// RecentLog returns the daemon's last n log lines (all it keeps when
	// n <= 0), oldest first.
	RecentLog(n int) []string
}

// ImageInfo is one entry of images --json (GET /v1/images): an image
// process-image imported, what it is made of and what is built on it.
type ImageInfo struct {
	ID             string    `json:"id"`                      // the image id delete-image takes
	Ref            string    `json:"ref"`                     // its containerd image
	Bucket         string    `json:"bucket"`                  // the S3 object it came from: bucket,
	Key            string    `json:"key"`                     // key,
	ETag           string    `json:"etag"`                    // and ETag
	RunID          string    `json:"run_id"`                  // the process-image run that made it
	Digest         string    `json:"digest,omitempty"`        // the layer blob's (compressed) digest
	DiffID         string    `json:"diff_id,omitempty"`       // the layer's uncompressed digest
	ChainID        string    `json:"chain_id"`                // the base snapshot's chain id
	Size           int64     `json:"size"`                    // bytes of the tar stream; 0 once the run's record is gone
	CompressedSize int64     `json:"compressed_size"`         // bytes read from S3; 0 likewise
	Entries        int       `json:"entries,omitempty"`       // tar entries
	BaseSnapshot   string    `json:"base_snapshot,omitempty"` // our snapshot key of the base; empty once it is gone
	DeviceID       uint32    `json:"device_id,omitempty"`     // the base's thin id
	DeviceName     string    `json:"device_name,omitempty"`   // and its /dev/mapper name
	Usage          int64     `json:"usage"`                   // bytes the base's device maps; -1 when unknown
	Dependants     []string  `json:"dependants"`              // snapshots built on the base: delete-image refuses while any
	Created        time.Time `json:"created"`                 // RFC 3339, UTC
}

// SnapshotTree is snapshots --json (GET /v1/snapshots): every snapshot
// as a forest (like `ctr snapshots tree`) plus the devices no snapshot
// owns: templates, spares, orphans.
type SnapshotTree struct {
	Pool        string          `json:"pool"`                  // the pool's name
	UsageSource string          `json:"usage_source"`          // "pool metadata" (exact for every device) or "thin status" (active devices only)
	UsageError  string          `json:"usage_error,omitempty"` // why the pool metadata could not be read
	Roots       []*SnapshotNode `json:"snapshots"`             // the snapshots without a parent, each with its children
	Devices     []DeviceInfo    `json:"devices,omitempty"`     // the devices that are no snapshot's
}

// SnapshotNode is one snapshot and its children.
type SnapshotNode struct {
	Key        string            `json:"key"`                 // our key: containerd's "<ns>/<seq>/<name>", or ours ("remote/...")
	Namespace  string            `json:"namespace,omitempty"` // the key's containerd namespace
	Name       string            `json:"name,omitempty"`      // and the name containerd knows it by
	Parent     string            `json:"parent,omitempty"`    // the parent's key
	Kind       string            `json:"kind"`                // "Active", "View" or "Committed"
	State      string            `json:"state"`               // our record's state, e.g. "ready"
	DeviceID   uint32            `json:"device_id"`           // its thin id
	DeviceName string            `json:"device_name"`         // and /dev/mapper name
	Active     bool              `json:"active"`              // the device is activated
	Size       uint64            `json:"size"`                // the device's virtual size, bytes
	Usage      int64             `json:"usage"`               // bytes it maps; -1 when unknown
	FSType     string            `json:"fs_type,omitempty"`   // "ext4" or "xfs"
	Created    time.Time         `json:"created"`             // RFC 3339, UTC
	Labels     map[string]string `json:"labels,omitempty"`    // containerd's labels on it
	Children   []*SnapshotNode   `json:"children,omitempty"`  // the snapshots whose parent it is
}

// DeviceInfo is a thin device that is not a snapshot's.
type DeviceInfo struct {
	ID      uint32    `json:"id"`               // thin id
	Name    string    `json:"name"`             // /dev/mapper name
	Role    string    `json:"role"`             // "template", "spare" or "snapshot" (an orphan's)
	State   string    `json:"state"`            // e.g. "ready", "orphaned", "quarantined"
	Owner   string    `json:"owner,omitempty"`  // the template's name, or the key it was made for
	Origin  uint32    `json:"origin,omitempty"` // the thin id it was snapshotted from
	Active  bool      `json:"active"`           // the device is activated
	Size    uint64    `json:"size"`             // virtual size, bytes
	Usage   int64     `json:"usage"`            // bytes it maps; -1 when unknown
	Created time.Time `json:"created"`          // a template's creation, else the record's last change
	Error   string    `json:"error,omitempty"`  // why it was set aside
}

// Walk calls fn for every node of the forest, parents before children,
// with its depth.
func (t SnapshotTree) Walk(fn func(n *SnapshotNode, depth int)) {
	var walk func(ns []*SnapshotNode, d int)
	walk = func(ns []*SnapshotNode, d int) {
		for _, n := range ns {
			fn(n, d)
			walk(n.Children, d+1)
		}
	}
	walk(t.Roots, 0)
}

func inventoryRoutes(mux *http.ServeMux, b InventoryBackend) {
	mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		imgs, err := b.Images(r.Context())
		reply(w, imgs, err)
	})
	mux.HandleFunc("GET /v1/snapshots", func(w http.ResponseWriter, r *http.Request) {
		tree, err := b.Snapshots(r.Context())
		reply(w, tree, err)
	})
	mux.HandleFunc("GET /v1/log", func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if v := r.URL.Query().Get("lines"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil {
				writeError(w, fmt.Errorf("lines=%q: not a number: %w", v, errdefs.ErrInvalidArgument))
				return
			}
		}
		reply(w, b.RecentLog(n), nil)
	})
	mux.HandleFunc("GET /v1/diag", func(w http.ResponseWriter, r *http.Request) {
		files, err := b.Diag(r.Context())
		reply(w, files, err)
	})
}

// Images lists the imported images.
func (c *Client) Images(ctx context.Context) ([]ImageInfo, error) {
	var imgs []ImageInfo
	err := c.do(ctx, http.MethodGet, "/v1/images", nil, &imgs)
	return imgs, err
}

// Snapshots returns the snapshot tree and the other devices.
func (c *Client) Snapshots(ctx context.Context) (SnapshotTree, error) {
	var tree SnapshotTree
	err := c.do(ctx, http.MethodGet, "/v1/snapshots", nil, &tree)
	return tree, err
}

// RecentLog returns the daemon's last n log lines (all it keeps when
// n <= 0).
func (c *Client) RecentLog(ctx context.Context, n int) ([]string, error) {
	var lines []string
	err := c.do(ctx, http.MethodGet, "/v1/log?lines="+strconv.Itoa(n), nil, &lines)
	return lines, err
}

// Diag returns the daemon's diagnostics files.
func (c *Client) Diag(ctx context.Context) ([]DiagFile, error) {
	var files []DiagFile
	err := c.do(ctx, http.MethodGet, "/v1/diag", nil, &files)
	return files, err
}
