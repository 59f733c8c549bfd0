package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// fakeRuns answers the run routes from a map.
type fakeRuns struct{ runs map[string]Run }

func (f fakeRuns) ProcessImage(context.Context, ProcessImageRequest) (Run, error) {
	return Run{}, errdefs.ErrNotImplemented
}
func (f fakeRuns) Run(id string) (Run, error) { return f.runs[id], nil }
func (f fakeRuns) Runs() ([]Run, error)       { return nil, nil }
func (f fakeRuns) Cancel(_ context.Context, id string) (Run, error) {
	r, ok := f.runs[id]
	switch {
	case !ok:
		return r, fmt.Errorf("process-image run %s: no such run: %w", id, errdefs.ErrNotFound)
	case r.State.Finished():
		return r, fmt.Errorf("process-image run %s is already %s: %w", id, r.State, errdefs.ErrFailedPrecondition)
	}
	r.State = RunCancelled
	return r, nil
}
func (f fakeRuns) Queues() []QueueInfo {
	return []QueueInfo{{Name: "unpacks", Capacity: 2, Active: 1, Runs: []QueuedRun{{ID: "r1"}}}}
}

func TestRunRoutesCancelAndQueues(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	runRoutes(mux, fakeRuns{runs: map[string]Run{
		"r1": {ID: "r1", State: RunExtracting},
		"r2": {ID: "r2", State: RunDone},
	}})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(sock)
	ctx := context.Background()

	if r, err := c.Cancel(ctx, "r1"); err != nil || r.State != RunCancelled {
		t.Errorf("Cancel r1: %v %s", err, r.State)
	}
	if _, err := c.Cancel(ctx, "r2"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Cancel of a finished run: %v, want failed precondition", err)
	}
	if _, err := c.Cancel(ctx, "zz"); !errdefs.IsNotFound(err) || err.Error() != "process-image run zz: no such run" {
		t.Errorf("Cancel of an unknown run: %v", err)
	}
	qs, err := c.Queues(ctx)
	if err != nil || len(qs) != 1 || qs[0].Name != "unpacks" || qs[0].Capacity != 2 || qs[0].Runs[0].ID != "r1" {
		t.Errorf("Queues: %v %+v", err, qs)
	}
}
