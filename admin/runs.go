package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

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
// reason. It is errdefs.ErrAborted (cancelled) or ErrUnknown (failed: the
// record keeps the reason's text, not its kind) without printing the
// kind: the message used to end in a stray ": unknown".
func RunError(r Run) error {
	switch r.State {
	case RunCancelled:
		return &runError{msg: fmt.Sprintf("process-image run %s (s3://%s/%s) was cancelled: %s", r.ID, r.Bucket, r.Key, r.Error), kinds: []error{errdefs.ErrAborted}}
	case RunFailed:
		return &runError{msg: fmt.Sprintf("%v: run %s (s3://%s/%s): %s", errRunFailed, r.ID, r.Bucket, r.Key, r.Error), kinds: []error{errRunFailed, errdefs.ErrUnknown}}
	}
	return nil
}

// runError is a finished run's failure as RunError reports it.
type runError struct {
	msg   string
	kinds []error
}

func (e *runError) Error() string { return e.msg }

func (e *runError) Is(target error) bool { return slices.Contains(e.kinds, target) }
