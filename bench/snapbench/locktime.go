package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/snapshotter"
)

// lockTime measures how long Remove and Commit keep their caller waiting.
// containerd calls Remove from its garbage collection while it holds its
// snapshotter lock exclusively, and Commit inside its bbolt write
// transaction, so this is time every other snapshot operation of the node
// may wait (issue 10 B11). Two flyio snapshotters on pools of their own,
// measured in the same run: the product (Remove marks the device, the
// background reaper and Cleanup delete it) and the baseline "inline",
// whose Remove does the dm work (deactivate, delete) before it returns,
// as Remove did before. Cleanup's own time is reported for the product:
// it runs after containerd let go of its lock.
func lockTime(ctx context.Context, w io.Writer, cfg poolConfig, n int) (retErr error) {
	reap, err := newFlyioWith(ctx, cfg, "snapbench-reap", "reaping", nil)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, reap.close()) }()
	inline, err := newFlyioWith(ctx, cfg, "snapbench-inline", "inline", func(c *snapshotter.Config) { c.RemoveInline = true })
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, inline.close()) }()

	ops := []string{"Commit (after unmount)", "Remove, active snapshot", "Remove, committed snapshot", "Cleanup after the two Removes"}
	times := map[string][][]time.Duration{}
	for _, c := range []*contestant{reap, inline} {
		times[c.name] = make([][]time.Duration, len(ops))
		if err := makeImage(ctx, c.sn, "image"); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	for i := 0; i < n; i++ {
		order := []*contestant{reap, inline}
		if i%2 == 1 {
			order = []*contestant{inline, reap}
		}
		for _, c := range order {
			ds, err := lockIteration(ctx, c.sn, i)
			if err != nil {
				return fmt.Errorf("%s: iteration %d: %w", c.name, i, err)
			}
			for j, d := range ds {
				times[c.name][j] = append(times[c.name][j], d)
			}
		}
		fmt.Fprintf(os.Stderr, "snapbench: lock-time iteration %d/%d done\n", i+1, n)
	}
	for _, c := range []*contestant{reap, inline} {
		if err := c.sn.Remove(ctx, "image"); err != nil {
			return fmt.Errorf("%s: remove image: %w", c.name, err)
		}
	}

	fmt.Fprintf(w, "time the caller waits (containerd holds its snapshotter lock, or its write transaction for Commit), median of %d:\n\n", n)
	fmt.Fprintf(w, "| operation | inline (baseline: dm work inside Remove) | reaping (Remove marks, reaper/Cleanup delete) | baseline ÷ reaping |\n|---|---|---|---|\n")
	for j, op := range ops {
		b, r := median(times["inline"][j]), median(times["reaping"][j])
		ratio := "—"
		if r > 0 && j < 3 {
			ratio = fmt.Sprintf("%.1f×", float64(b)/float64(r))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", op, fmtDur(b), fmtDur(r), ratio)
	}
	fmt.Fprintf(w, "\nnotes:\n- Commit is the same code in both; its row shows what Commit holds containerd's transaction for (thin status, deactivate, two bbolt writes).\n")
	fmt.Fprintf(w, "- Cleanup is outside containerd's lock; inline's Cleanup finds nothing left.\n\n")
	return nil
}

// lockIteration times Commit of a written child of image, Remove of an
// empty active snapshot and of the committed one, then Cleanup.
func lockIteration(ctx context.Context, sn snapshots.Snapshotter, i int) ([]time.Duration, error) {
	empty, ctr, layer := fmt.Sprintf("lt-empty-%d", i), fmt.Sprintf("lt-ctr-%d", i), fmt.Sprintf("lt-layer-%d", i)
	if _, err := sn.Prepare(ctx, empty, ""); err != nil {
		return nil, err
	}
	mounts, err := sn.Prepare(ctx, ctr, "image")
	if err != nil {
		return nil, err
	}
	if err := writeFiles(mounts, "change", 1, 1<<20); err != nil {
		return nil, err
	}
	var ds []time.Duration
	d, err := timed(func() error { return sn.Commit(ctx, layer, ctr) })
	if err != nil {
		return nil, err
	}
	ds = append(ds, d)
	for _, k := range []string{empty, layer} {
		d, err := timed(func() error { return sn.Remove(ctx, k) })
		if err != nil {
			return nil, fmt.Errorf("remove %s: %w", k, err)
		}
		ds = append(ds, d)
	}
	d, err = timed(func() error { return sn.(snapshots.Cleaner).Cleanup(ctx) })
	if err != nil {
		return nil, err
	}
	return append(ds, d), nil
}
