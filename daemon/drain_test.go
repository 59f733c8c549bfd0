package daemon

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// stuckSnapshotter's Stat runs until its call is cancelled, then takes a
// while longer to finish its step, as a handler in a dm step does.
type stuckSnapshotter struct {
	snapshots.Snapshotter
	entered  chan struct{}
	finished atomic.Bool
}

func (s *stuckSnapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	close(s.entered)
	<-ctx.Done()
	time.Sleep(300 * time.Millisecond)
	s.finished.Store(true)
	return snapshots.Info{}, ctx.Err()
}

// TestDrainWaitsForHandlers stops a server with a call in flight past
// the drain deadline: drainGRPC must cancel it and return only once its
// handler has returned, so that nothing runs after the database closes.
func TestDrainWaitsForHandlers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	sn := &stuckSnapshotter{entered: make(chan struct{})}
	srv := newGRPCServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	go srv.Serve(l)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go snapshotsapi.NewSnapshotsClient(conn).Stat(context.Background(), &snapshotsapi.StatSnapshotRequest{Snapshotter: "x", Key: "k"})
	select {
	case <-sn.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached its handler")
	}
	drainGRPC(context.Background(), srv, 100*time.Millisecond, 10*time.Second)
	if !sn.finished.Load() {
		t.Fatal("drainGRPC returned while a handler was still running")
	}
}
