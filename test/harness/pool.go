// Package harness holds what the end-to-end tests (test/e2e), the crash
// tests (test/crash) and the demo share besides the image: tearing a test
// pool down without dmsetup, finding the binaries, running commands and
// configuring a private containerd.
package harness

import (
	"context"
	"fmt"

	"github.com/superfly/flyio-image-manager/dmpool"
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
