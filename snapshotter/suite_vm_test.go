package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
)

// realSnapshotter makes a snapshotter on a fresh loopback pool under root
// and returns it with a cleanup that tears everything down and fails if
// any thin device is left active.
func realSnapshotter(ctx context.Context, root string) (*Snapshotter, func() error, error) {
	return realSnapshotterWith(ctx, root, Config{BaseSize: 64 << 20, Spares: 2})
}

func realSnapshotterWith(ctx context.Context, root string, cfg Config) (*Snapshotter, func() error, error) {
	sn, _, cleanup, err := realSnapshotterSized(ctx, root, cfg, 4<<30)
	return sn, cleanup, err
}

// realSnapshotterSized is realSnapshotterWith on a pool of dataSize bytes
// of data, and also returns the pool.
func realSnapshotterSized(ctx context.Context, root string, cfg Config, dataSize int64) (*Snapshotter, *dmpool.Pool, func() error, error) {
	name := fmt.Sprintf("fimt-%08x", rand.Uint32())
	// The pool files live outside root: the suite dumps root's files
	// into the log on failure, and a 4GiB sparse file would be read whole.
	poolDir, err := os.MkdirTemp("", name+"-")
	if err != nil {
		return nil, nil, nil, err
	}
	pool, _, err := dmpool.Open(ctx, dmpool.Config{
		Name:         name,
		DataFile:     filepath.Join(poolDir, "data"),
		MetadataFile: filepath.Join(poolDir, "metadata"),
		DataSize:     dataSize,
		MetadataSize: 64 << 20,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	store, err := metadata.Open(filepath.Join(root, "metadata.db"), metadata.Options{})
	if err != nil {
		pool.Remove(ctx)
		return nil, nil, nil, err
	}
	sn, err := New(ctx, pool, store, cfg)
	if err != nil {
		store.Close()
		pool.Remove(ctx)
		return nil, nil, nil, err
	}
	cleanup := func() error {
		var errs []error
		sn.Close()
		store.Close()
		active, err := pool.ListActive(ctx)
		errs = append(errs, err)
		for _, d := range active {
			errs = append(errs, pool.Deactivate(ctx, d.Name))
		}
		errs = append(errs, pool.Remove(ctx))
		errs = append(errs, os.RemoveAll(poolDir))
		return errors.Join(errs...)
	}
	return sn, pool, cleanup, nil
}

func TestSnapshotterSuiteOnDMThin(t *testing.T) {
	dmtest.Require(t)
	t.Logf("kernel %s", dmtest.KernelRelease())
	testsuite.SnapshotterSuite(t, "flyio", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return realSnapshotter(ctx, root)
	})
}

// TestSnapshotterSuiteThroughProxy runs the same suite through containerd's
// gRPC proxy client and contrib/snapshotservice, which is how containerd
// talks to the daemon.
func TestSnapshotterSuiteThroughProxy(t *testing.T) {
	dmtest.Require(t)
	testsuite.SnapshotterSuite(t, "flyio-proxy", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sn, cleanup, err := realSnapshotter(ctx, root)
		if err != nil {
			return nil, nil, err
		}
		sock := filepath.Join(root, "snapshotter.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		srv := grpc.NewServer()
		snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
		go srv.Serve(l)
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			srv.Stop()
			cleanup()
			return nil, nil, err
		}
		client := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "flyio")
		return client, func() error {
			conn.Close()
			srv.Stop()
			return cleanup()
		}, nil
	})
}
