package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/devmapper"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// poolConfig is shared by both pools so that the only difference between
// the two contestants is the snapshotter on top.
type poolConfig struct {
	Dir          string
	DataSize     int64
	MetadataSize int64
	BlockSize    uint32
	BaseSize     uint64
	// SkipBlockZeroing is off (zeroing, the product's default) except
	// for the baseline pool of the zeroing benchmark.
	SkipBlockZeroing bool
}

func (c poolConfig) open(ctx context.Context, name string) (*dmpool.Pool, error) {
	dir := filepath.Join(c.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	pool, _, err := dmpool.Open(ctx, dmpool.Config{
		Name:         name,
		DataFile:     filepath.Join(dir, "data"),
		MetadataFile: filepath.Join(dir, "metadata"),
		DataSize:     c.DataSize,
		MetadataSize: c.MetadataSize,
		BlockSize:    c.BlockSize,

		SkipBlockZeroing: c.SkipBlockZeroing,
	})
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", name, err)
	}
	return pool, nil
}

// contestant is one snapshotter on its own pool, with what tears it down.
type contestant struct {
	name  string
	sn    snapshots.Snapshotter
	close func() error
}

// newFlyio builds our snapshotter the way the daemon does: dmpool.Open,
// metadata.Open, snapshotter.New.
func newFlyio(ctx context.Context, c poolConfig, poolName string) (*contestant, error) {
	return newFlyioWith(ctx, c, poolName, "flyio", nil)
}

// newFlyioWith is newFlyio with the snapshotter's Config changed by mod.
func newFlyioWith(ctx context.Context, c poolConfig, poolName, name string, mod func(*snapshotter.Config)) (*contestant, error) {
	pool, err := c.open(ctx, poolName)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(c.Dir, poolName, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	store, err := metadata.Open(filepath.Join(root, "metadata.db"), metadata.Options{})
	if err != nil {
		pool.Remove(ctx)
		return nil, err
	}
	snCfg := snapshotter.Config{BaseSize: c.BaseSize, FSType: "ext4", Spares: config.Default().Snapshotter.SpareDevices}
	if mod != nil {
		mod(&snCfg)
	}
	sn, err := snapshotter.New(ctx, pool, store, snCfg)
	if err != nil {
		store.Close()
		pool.Remove(ctx)
		return nil, err
	}
	return &contestant{name: name, sn: sn, close: func() error {
		return errors.Join(sn.Close(), store.Close(), teardownPool(ctx, pool))
	}}, nil
}

// newDevmapper builds containerd's devmapper snapshotter in-process on a
// pool that dmpool created, so both pools have identical tables.
func newDevmapper(ctx context.Context, c poolConfig, poolName string) (*contestant, error) {
	pool, err := c.open(ctx, poolName)
	if err != nil {
		return nil, err
	}
	sn, err := devmapper.NewSnapshotter(ctx, &devmapper.Config{
		RootPath:       filepath.Join(c.Dir, poolName, "root"),
		PoolName:       poolName,
		BaseImageSize:  fmt.Sprintf("%dB", c.BaseSize),
		FileSystemType: "ext4",
	})
	if err != nil {
		pool.Remove(ctx)
		return nil, fmt.Errorf("devmapper snapshotter on %s: %w", poolName, err)
	}
	return &contestant{name: "devmapper", sn: sn, close: func() error {
		return errors.Join(sn.Close(), teardownPool(ctx, pool))
	}}, nil
}

// teardownPool deactivates whatever thin devices are left and removes the
// pool table (the files go with the scratch disk).
func teardownPool(ctx context.Context, pool *dmpool.Pool) error {
	active, err := pool.ListActive(ctx)
	errs := []error{err}
	for _, d := range active {
		errs = append(errs, pool.Deactivate(ctx, d.Name))
	}
	errs = append(errs, pool.Remove(ctx))
	return errors.Join(errs...)
}
