package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/metadata"
)

// fakeRuns answers the run routes from a map.
type fakeRuns struct{ runs map[string]metadata.Run }

func (f fakeRuns) ProcessImage(context.Context, importer.Request) (metadata.Run, error) {
	return metadata.Run{}, errdefs.ErrNotImplemented
}
func (f fakeRuns) Run(id string) (metadata.Run, error) { return f.runs[id], nil }
func (f fakeRuns) Runs() ([]metadata.Run, error)       { return nil, nil }
func (f fakeRuns) Cancel(_ context.Context, id string) (metadata.Run, error) {
	r, ok := f.runs[id]
	switch {
	case !ok:
		return r, fmt.Errorf("process-image run %s: no such run: %w", id, errdefs.ErrNotFound)
	case r.State.Finished():
		return r, fmt.Errorf("process-image run %s is already %s: %w", id, r.State, errdefs.ErrFailedPrecondition)
	}
	r.State = metadata.RunCancelled
	return r, nil
}
func (f fakeRuns) Queues() []importer.QueueInfo {
	return []importer.QueueInfo{{Name: importer.QueueUnpacks, Capacity: 2, Active: 1, Runs: []importer.QueuedRun{{ID: "r1"}}}}
}

func TestRunRoutesCancelAndQueues(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	runRoutes(mux, fakeRuns{runs: map[string]metadata.Run{
		"r1": {ID: "r1", State: metadata.RunExtracting},
		"r2": {ID: "r2", State: metadata.RunDone},
	}})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(sock)
	ctx := context.Background()

	if r, err := c.Cancel(ctx, "r1"); err != nil || r.State != metadata.RunCancelled {
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
