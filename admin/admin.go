// Package admin is the daemon's operator API: JSON over HTTP on a unix
// socket (admin_address, mode 0600). The operator commands (process-image,
// status, gc, delete-image) are its clients, so work that needs the
// daemon's locks and state is done by the daemon itself.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
)

// Status is what `status` prints.
type Status struct {
	Daemon    DaemonInfo `json:"daemon"`
	Pool      string     `json:"pool"`
	PoolState PoolStatus `json:"pool_status"`
	// Counts of snapshots by kind and of devices by state.
	Snapshots map[string]int `json:"snapshots"`
	Devices   map[string]int `json:"devices"`
	Images    int            `json:"images"`
	Runs      []Run          `json:"runs_in_progress"`
	// FullThreshold is [pool] full_threshold; Refusing is set (with the
	// error new work gets) while usage is at or above it.
	FullThreshold int    `json:"full_threshold"`
	Refusing      string `json:"refusing,omitempty"`
	// Queues are the downloads and unpacks queues.
	Queues []QueueInfo `json:"queues"`
	// RecentRuns are every unfinished run and the last finished ones,
	// newest first.
	RecentRuns []Run `json:"recent_runs"`
	// GCProbes are gc probe devices ("<pool>-gcprobe-<id>") still
	// active: left by a gc that died and open, so not removed at start.
	GCProbes []GCProbe `json:"gc_probes,omitempty"`
	// Trouble is the pool trouble generation (trouble.go); nil from a
	// daemon that predates it.
	Trouble *PoolTrouble `json:"trouble,omitempty"`
	// Origins are the lazily-backed origins (process-image --lazy).
	Origins []Origin `json:"origins,omitempty"`
}

// Origin is a lazily-backed origin: the block image a lazy base reads
// what it has not got from, its local cache and how its fetch goes.
type Origin struct {
	Name string `json:"name"`
	// State is "fetching" (served over NBD while chunks arrive),
	// "local" (complete, a loop device over the cache), "failed" (the
	// background fetch keeps failing: see LastError) or "broken" (its
	// directory could not be loaded: it is kept and not served).
	State  string `json:"state"`
	Device string `json:"device,omitempty"` // what thin tables use now
	// Chunks and bytes of the block image present in the cache, of all.
	ChunksPresent int   `json:"chunks_present"`
	ChunksTotal   int   `json:"chunks_total"`
	BytesPresent  int64 `json:"bytes_present"`
	BytesTotal    int64 `json:"bytes_total"`
	// OnDemandFetches are chunks fetched because a reader wanted them;
	// Prefetched, by the background fetch.
	OnDemandFetches int64 `json:"on_demand_fetches"`
	Prefetched      int64 `json:"prefetched"`
	// ReadErrors counts reads answered with an I/O error (a failed or
	// timed-out fetch); LastError is the last error of any kind.
	ReadErrors  int64      `json:"read_errors"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// GCProbe is a leftover gc probe device.
type GCProbe struct {
	Name      string `json:"name"`
	ThinID    uint32 `json:"thin_id"`
	OpenCount int32  `json:"open_count"`
}

// DaemonInfo says which daemon answered and where it serves.
type DaemonInfo struct {
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// UptimeSeconds is as of the answer.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Address is the snapshots API socket (containerd's proxy_plugins
	// address), AdminAddress this API's; the optional ones are empty
	// when off.
	Address        string `json:"address"`
	AdminAddress   string `json:"admin_address"`
	MetricsAddress string `json:"metrics_address,omitempty"`
	DebugAddress   string `json:"debug_address,omitempty"`
}

// GCRequest asks for a gc run. MinAge is a Go duration ("5m"); empty
// means gc's default (5m).
type GCRequest struct {
	DryRun bool   `json:"dry_run"`
	MinAge string `json:"min_age,omitempty"`
	// IncludeQuarantined lets gc remove quarantined devices.
	IncludeQuarantined bool `json:"include_quarantined,omitempty"`
}

// DeleteImageResult says what delete-image removed.
type DeleteImageResult struct {
	Image Image `json:"image"`
	// Snapshots are the base snapshot keys removed with it (none when
	// another imported image shares the base).
	Snapshots []string `json:"snapshots"`
	// Kept are base snapshots left in place because a containerd
	// namespace still uses them (a layer adopted by another namespace);
	// gc removes them once none does.
	Kept []string `json:"kept,omitempty"`
}

// Backend is what the daemon provides to the admin API. Each concern's
// methods and routes live in their own file: runs.go (process-image runs
// and queues), inventory.go (images, snapshots, diagnostics), backup.go (metadata backups) and this one
// (status, gc, delete-image).
type Backend interface {
	RunBackend
	InventoryBackend
	BackupBackend
	TroubleBackend
	Status(ctx context.Context) (Status, error)
	GC(ctx context.Context, req GCRequest) (GCReport, error)
	DeleteImage(ctx context.Context, id string) (DeleteImageResult, error)
	PublishBase(ctx context.Context, id string) (PublishBaseResult, error)
}

// Handler serves the admin API over b.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	runRoutes(mux, b)
	inventoryRoutes(mux, b)
	backupRoutes(mux, b)
	troubleRoutes(mux, b)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status(r.Context())
		reply(w, st, err)
	})
	mux.HandleFunc("POST /v1/gc", func(w http.ResponseWriter, r *http.Request) {
		var req GCRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, fmt.Errorf("bad request body: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
		rep, err := b.GC(r.Context(), req)
		reply(w, rep, err)
	})
	mux.HandleFunc("DELETE /v1/images/{id}", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.DeleteImage(r.Context(), r.PathValue("id"))
		reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/images/{id}/publish-base", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.PublishBase(r.Context(), r.PathValue("id"))
		reply(w, res, err)
	})
	return mux
}

type errorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind"`
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// kinds maps errdefs kinds to HTTP statuses and back, so a client gets an
// error of the same kind the daemon saw.
var kinds = []struct {
	err    error
	name   string
	status int
}{
	{errdefs.ErrNotFound, "not_found", http.StatusNotFound},
	{errdefs.ErrInvalidArgument, "invalid_argument", http.StatusBadRequest},
	{errdefs.ErrAlreadyExists, "already_exists", http.StatusConflict},
	{errdefs.ErrFailedPrecondition, "failed_precondition", http.StatusPreconditionFailed},
	{errdefs.ErrPermissionDenied, "permission_denied", http.StatusForbidden},
	{errdefs.ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	{errdefs.ErrResourceExhausted, "resource_exhausted", http.StatusInsufficientStorage},
}

func writeError(w http.ResponseWriter, err error) {
	status, kind := http.StatusInternalServerError, "unknown"
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			status, kind = k.status, k.name
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorBody{Error: err.Error(), Kind: kind})
}
