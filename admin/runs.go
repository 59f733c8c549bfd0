package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/metadata"
)

// RunBackend runs process-image imports.
type RunBackend interface {
	ProcessImage(ctx context.Context, req importer.Request) (metadata.Run, error)
	Run(id string) (metadata.Run, error)
	Runs() ([]metadata.Run, error)
	// Cancel stops a queued or running run and returns its final record.
	Cancel(ctx context.Context, id string) (metadata.Run, error)
	// Queues snapshots the downloads and unpacks queues.
	Queues() []importer.QueueInfo
}

func runRoutes(mux *http.ServeMux, b RunBackend) {
	mux.HandleFunc("POST /v1/process-image", func(w http.ResponseWriter, r *http.Request) {
		var req importer.Request
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
