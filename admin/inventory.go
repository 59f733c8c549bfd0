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

// ImageInfo is one image process-image imported, with what it is made of
// and what is built on it.
type ImageInfo struct {
	ID      string `json:"id"`
	Ref     string `json:"ref"`
	Bucket  string `json:"bucket"`
	Key     string `json:"key"`
	ETag    string `json:"etag"`
	RunID   string `json:"run_id"`
	Digest  string `json:"digest,omitempty"`
	DiffID  string `json:"diff_id,omitempty"`
	ChainID string `json:"chain_id"`
	// Size is the uncompressed tar stream; CompressedSize what was read
	// from S3 (both from the import run, 0 when its record is gone).
	Size           int64 `json:"size"`
	CompressedSize int64 `json:"compressed_size"`
	Entries        int   `json:"entries,omitempty"`
	// BaseSnapshot is our snapshot key holding the chain id; DeviceID and
	// DeviceName its thin device (0 and "" when the base is gone).
	BaseSnapshot string `json:"base_snapshot,omitempty"`
	DeviceID     uint32 `json:"device_id,omitempty"`
	DeviceName   string `json:"device_name,omitempty"`
	// Usage is the data the base device maps, in bytes; -1 when unknown.
	Usage int64 `json:"usage"`
	// Dependants are the snapshots (container layers, views) whose parent
	// chain reaches the base: delete-image refuses while there are any.
	Dependants []string  `json:"dependants"`
	Created    time.Time `json:"created"`
}

// SnapshotTree is every snapshot as a forest (like `ctr snapshots tree`)
// plus the devices no snapshot owns: templates, spares, orphans.
type SnapshotTree struct {
	Pool string `json:"pool"`
	// UsageSource says where Usage figures come from: "pool metadata"
	// (a metadata snapshot of the pool: exact for every device), or
	// "thin status" (only active devices) when that could not be read.
	UsageSource string          `json:"usage_source"`
	UsageError  string          `json:"usage_error,omitempty"`
	Roots       []*SnapshotNode `json:"snapshots"`
	Devices     []DeviceInfo    `json:"devices,omitempty"`
}

// SnapshotNode is one snapshot and its children.
type SnapshotNode struct {
	Key string `json:"key"`
	// Namespace and Name split a containerd key "<ns>/<seq>/<name>".
	Namespace  string            `json:"namespace,omitempty"`
	Name       string            `json:"name,omitempty"`
	Parent     string            `json:"parent,omitempty"`
	Kind       string            `json:"kind"`
	State      string            `json:"state"`
	DeviceID   uint32            `json:"device_id"`
	DeviceName string            `json:"device_name"`
	Active     bool              `json:"active"`
	Size       uint64            `json:"size"`
	Usage      int64             `json:"usage"`
	FSType     string            `json:"fs_type,omitempty"`
	Created    time.Time         `json:"created"`
	Labels     map[string]string `json:"labels,omitempty"`
	Children   []*SnapshotNode   `json:"children,omitempty"`
}

// DeviceInfo is a thin device that is not a snapshot's.
type DeviceInfo struct {
	ID     uint32 `json:"id"`
	Name   string `json:"name"`
	Role   string `json:"role"`
	State  string `json:"state"`
	Owner  string `json:"owner,omitempty"`
	Origin uint32 `json:"origin,omitempty"`
	Active bool   `json:"active"`
	Size   uint64 `json:"size"`
	Usage  int64  `json:"usage"`
	// Created is the template's creation time, else the record's last
	// update.
	Created time.Time `json:"created"`
	Error   string    `json:"error,omitempty"`
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
