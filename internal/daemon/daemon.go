// Package daemon wires the pool, the metadata store and the snapshotter
// together and serves containerd's snapshots API on a unix socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/config"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// MetadataPath is where the metadata database of a root_dir lives.
func MetadataPath(cfg config.Config) string {
	return filepath.Join(cfg.RootDir, "metadata.db")
}

// PoolConfig translates the [pool] section for dmpool.
func PoolConfig(cfg config.Config) dmpool.Config {
	return dmpool.Config{
		Name:           cfg.Pool.Name,
		DataDevice:     cfg.Pool.DataDevice,
		MetadataDevice: cfg.Pool.MetadataDevice,
		DataFile:       cfg.Pool.DataFile,
		MetadataFile:   cfg.Pool.MetadataFile,
		DataSize:       int64(cfg.Pool.DataSize),
		MetadataSize:   int64(cfg.Pool.MetadataSize),
		BlockSize:      uint32(cfg.Pool.BlockSize),
		LowWaterMark:   cfg.Pool.LowWaterMark,
	}
}

// Run serves until ctx is cancelled (SIGTERM/SIGINT), then stops
// accepting requests, lets running ones finish and closes the database.
// Thin devices stay active, so containers keep running across restarts.
func Run(ctx context.Context, cfg config.Config) error {
	// The database lock comes first: a second daemon on the same root
	// must fail before it touches the pool or the socket.
	store, err := metadata.Open(MetadataPath(cfg), metadata.Options{})
	if err != nil {
		return err
	}
	defer store.Close()

	pool, result, err := dmpool.Open(ctx, PoolConfig(cfg))
	if err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	log.G(ctx).Infof("pool %s %s", pool.Name(), result)

	sn, err := snapshotter.New(ctx, pool, store, snapshotter.Config{
		BaseSize:    uint64(cfg.Snapshotter.BaseSize),
		FSType:      cfg.Snapshotter.FSType,
		BlockMounts: cfg.Snapshotter.MountType == "block",
	})
	if err != nil {
		return err
	}
	defer sn.Close()

	l, err := listen(cfg.Address, 0o660)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.G(ctx).Infof("serving snapshots API on %s", cfg.Address)
	notifyReady()

	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", cfg.Address, err)
	case <-ctx.Done():
	}
	log.G(ctx).Info("shutting down")
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		log.G(ctx).Warn("requests still running after 30s; stopping anyway")
		srv.Stop()
	}
	return nil
}

// listen opens a unix socket at path with mode, replacing a stale socket
// left by a daemon that died. Only called with the database lock held, so
// the socket cannot belong to a live daemon of this root_dir.
func listen(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
