package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"
)

// RunBackend runs process-image imports.
type RunBackend interface {
	ProcessImage(ctx context.Context, req ProcessImageRequest) (Run, error)
	Run(id string) (Run, error)
	Runs() ([]Run, error)
	// Cancel stops a queued or running run and returns its final record.
	Cancel(ctx context.Context, id string) (Run, error)
	// Queues snapshots the downloads and unpacks queues.
	Queues() []QueueInfo
}

func runRoutes(mux *http.ServeMux, b RunBackend) {
	mux.HandleFunc("POST /v1/process-image", func(w http.ResponseWriter, r *http.Request) {
		var req ProcessImageRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, fmt.Errorf("bad request body: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
		run, err := b.ProcessImage(r.Context(), req)
		reply(w, run, err)
	})
	mux.HandleFunc("GET /v1/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		run, err := b.Run(r.PathValue("id"))
		reply(w, run, err)
	})
	mux.HandleFunc("GET /v1/runs", func(w http.ResponseWriter, r *http.Request) {
		runs, err := b.Runs()
		reply(w, runs, err)
	})
	mux.HandleFunc("POST /v1/runs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		run, err := b.Cancel(r.Context(), r.PathValue("id"))
		reply(w, run, err)
	})
	mux.HandleFunc("GET /v1/queues", func(w http.ResponseWriter, r *http.Request) {
		reply(w, b.Queues(), nil)
	})
}

// errRunFailed wraps a run's failure for callers that waited on it.
var errRunFailed = errors.New("process-image failed")

// RunError turns a failed or cancelled run into an error carrying its
// message: cancelled is errdefs.ErrAborted, failed errdefs.ErrUnknown.
func RunError(r Run) error {
	if r.State == RunCancelled {
		return fmt.Errorf("process-image run %s (s3://%s/%s): %s: %w", r.ID, r.Bucket, r.Key, r.Error, errdefs.ErrAborted)
	}
	if r.State != RunFailed {
		return nil
	}
	return fmt.Errorf("%w: run %s (s3://%s/%s): %s: %w", errRunFailed, r.ID, r.Bucket, r.Key, r.Error, errdefs.ErrUnknown)
}
