// Package harness holds what the end-to-end tests (test/e2e), the crash
// tests (test/crash) and the demo share besides the image: tearing a test
// pool down without dmsetup, finding the binaries, running commands and
// configuring a private containerd.
package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/loopdev"
)

// RemovePool deactivates every thin device of the pool cfg names, then
// removes the pool and detaches its loop devices. The daemon leaves thin
// devices active on shutdown (containers outlive it), so a test that
// wants its loop files back must do this. A missing pool is no error.
func RemovePool(ctx context.Context, cfg dmpool.Config) error {
	info, err := dmpool.GetDeviceInfo(cfg.Name)
	if err != nil {
		return fmt.Errorf("pool %q: %w", cfg.Name, err)
	}
	if !info.Exists {
		return nil
	}
	// Open finds the active pool (it never creates one that exists).
	pool, _, err := dmpool.Open(ctx, cfg)
	if err != nil {
		return err
	}
	active, err := pool.ListActive(ctx)
	if err != nil {
		return err
	}
	for _, d := range active {
		if err := pool.Deactivate(ctx, d.Name); err != nil {
			return fmt.Errorf("pool %q: %w", cfg.Name, err)
		}
	}
	return pool.Remove(ctx)
}

// LoopPool opens a fresh pool named name on sparse loopback files of
// dataSize and metadataSize under a t.TempDir, removed (RemovePool) at
// cleanup: the set-up of a test that drives dmpool directly.
func LoopPool(t *testing.T, name string, dataSize, metadataSize int64) (*dmpool.Pool, dmpool.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := dmpool.Config{
		Name:     name,
		DataFile: filepath.Join(dir, "data"), MetadataFile: filepath.Join(dir, "meta"),
		DataSize: dataSize, MetadataSize: metadataSize,
	}
	pool, _, err := dmpool.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := RemovePool(context.Background(), cfg); err != nil {
			t.Error(err)
		}
	})
	return pool, cfg
}

// WriteThin activates thin id of pool as name, size bytes, opens it for
// writing, lets write fill it, syncs and closes it. The device stays
// active.
func WriteThin(t testing.TB, pool *dmpool.Pool, name string, id uint32, size uint64, write func(f *os.File) error) {
	t.Helper()
	path, err := pool.Activate(context.Background(), name, id, size)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := write(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TearDownPool does to the kernel side what a reboot does, with the
// low-level dmpool calls: every dm table of the pool (its thin devices,
// then the pool) is removed and its loop devices are detached. The
// files stay. The daemon must be dead (killed): this is no clean stop.
func (e *Env) TearDownPool() {
	e.T.Helper()
	name := e.Cfg.Pool.Name
	devs, err := dmpool.ListDevices()
	if err != nil {
		e.T.Fatal(err)
	}
	for _, d := range devs {
		if strings.HasPrefix(d.Name, name+"-thin-") {
			if err := dmpool.RemoveDevice(d.Name, false); err != nil {
				e.T.Fatalf("removing %s: %v", d.Name, err)
			}
		}
	}
	if err := dmpool.RemoveDevice(name, false); err != nil {
		e.T.Fatalf("removing pool %s: %v", name, err)
	}
	for _, f := range []string{e.Cfg.Pool.DataFile, e.Cfg.Pool.MetadataFile} {
		l, err := loopdev.Find(f)
		if err != nil {
			e.T.Fatalf("loop of %s: %v", f, err)
		}
		if l == nil {
			continue // autoclear already detached it
		}
		err = loopdev.Detach(l.Path)
		l.Close()
		if err != nil {
			e.T.Fatal(err)
		}
	}
}
