package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"path/filepath"
	"strings"
	"time"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/metadata"
)

// breakdown times, on a pool of its own, each step our Prepare and Remove
// are made of, so a missed target can be traced to the step that costs.
// A parentless or child Prepare is: 1 bbolt read + 3 bbolt write
// transactions, dmpool.CreateSnapshot (pool status, ListActive,
// create_snap) and dmpool.Activate; Remove is 3 bbolt writes, Deactivate
// and Delete.
func breakdown(ctx context.Context, w io.Writer, cfg poolConfig, n, active int) (retErr error) {
	pool, err := cfg.open(ctx, "snapbench-prof")
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, teardownPool(ctx, pool)) }()
	dbDir := filepath.Join(cfg.Dir, "snapbench-prof")
	store, err := metadata.Open(filepath.Join(dbDir, "metadata.db"), metadata.Options{})
	if err != nil {
		return err
	}
	defer store.Close()

	const origin = 1
	if err := pool.CreateThin(ctx, origin); err != nil {
		return err
	}
	steps := []struct {
		name string
		ds   []time.Duration
	}{
		{name: "bbolt write transaction (one fsync)"},
		{name: "bbolt read transaction"},
		{name: "dm pool status (kernel commits pool metadata)"},
		{name: "dmpool.ListActive, 1 device active"},
		{name: "create_snap message alone"},
		{name: "dmpool.CreateSnapshot (status + ListActive + create_snap)"},
		{name: "dmpool.Activate (create, load, resume, mknod)"},
		{name: "dmpool.Deactivate (DM_DEV_REMOVE)"},
		{name: "delete message"},
		{name: "DM_DEV_REMOVE alone, right after Activate"},
		{name: fmt.Sprintf("dmpool.ListActive, %d devices active", active)},
		{name: fmt.Sprintf("dmpool.CreateSnapshot, %d devices active", active)},
	}
	add := func(i int, f func() error) error {
		d, err := timed(f)
		if err != nil {
			return fmt.Errorf("%s: %w", steps[i].name, err)
		}
		steps[i].ds = append(steps[i].ds, d)
		return nil
	}
	busy := 0 // DM_DEV_REMOVEs that failed (EBUSY) right after Activate
	name := func(id uint32) string { return fmt.Sprintf("snapbench-prof-thin-%d", id) }
	for i := 0; i < n; i++ {
		a, b := uint32(100+2*i), uint32(101+2*i)
		var op *metadata.Op
		errs := []error{
			add(0, func() (err error) {
				return store.Update(func(tx *metadata.Tx) (err error) { op, err = tx.BeginOp("bench", "k", a); return err })
			}),
			add(1, func() error {
				return store.View(func(tx *metadata.Tx) error { _, err := tx.Template("none"); _ = err; return nil })
			}),
			add(2, func() error { _, err := pool.Status(ctx); return err }),
			add(4, func() error {
				_, err := dmpool.Message(pool.Name(), fmt.Sprintf("create_snap %d %d", a, origin))
				return err
			}),
			add(6, func() error { _, err := pool.Activate(ctx, name(a), a, cfg.BaseSize); return err }),
			add(3, func() error { _, err := pool.ListActive(ctx); return err }),
			add(5, func() error { return pool.CreateSnapshot(ctx, b, origin) }),
			add(7, func() error { return pool.Deactivate(ctx, name(a)) }),
			add(8, func() error { return pool.Delete(ctx, a) }),
			func() error {
				if _, err := pool.Activate(ctx, name(b), b, cfg.BaseSize); err != nil {
					return err
				}
				return add(9, func() error {
					if err := dmpool.RemoveDevice(name(b), false); err != nil {
						busy++
						return pool.Deactivate(ctx, name(b))
					}
					return nil
				})
			}(),
			pool.Delete(ctx, b),
			store.Update(func(tx *metadata.Tx) error { return tx.EndOp(op) }),
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	// The same with many devices active, as during the concurrent round.
	for i := 0; i < active; i++ {
		id := uint32(1000 + i)
		if err := pool.CreateSnapshot(ctx, id, origin); err != nil {
			return err
		}
		if _, err := pool.Activate(ctx, name(id), id, cfg.BaseSize); err != nil {
			return err
		}
	}
	for i := 0; i < n; i++ {
		id := uint32(5000 + i)
		if err := errors.Join(
			add(10, func() error { _, err := pool.ListActive(ctx); return err }),
			add(11, func() error { return pool.CreateSnapshot(ctx, id, origin) }),
			pool.Delete(ctx, id),
		); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "flyio step breakdown (medians of %d, own pool with the same config):\n\n", n)
	width := 0
	for _, s := range steps {
		width = max(width, len(s.name))
	}
	fmt.Fprintf(w, "| %-*s | median |\n| %s | ------ |\n", width, "step", strings.Repeat("-", width))
	for _, s := range steps {
		fmt.Fprintf(w, "| %-*s | %s |\n", width, s.name, fmtDur(median(s.ds)))
	}
	fmt.Fprintf(w, "\nDM_DEV_REMOVE right after Activate failed %d of %d times (then dmpool.Deactivate retried).\n\n", busy, n)
	return nil
}
