package metrics

import (
	"context"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// The operation label values, one per snapshots.Snapshotter method.
const (
	OpPrepare = "prepare"
	OpView    = "view"
	OpCommit  = "commit"
	OpRemove  = "remove"
	OpMounts  = "mounts"
	OpStat    = "stat"
	OpUpdate  = "update"
	OpUsage   = "usage"
	OpWalk    = "walk"
	OpCleanup = "cleanup"
)

// Operations lists every operation label value.
var Operations = []string{OpPrepare, OpView, OpCommit, OpRemove, OpMounts, OpStat, OpUpdate, OpUsage, OpWalk, OpCleanup}

// Snapshotter wraps sn so that every call counts in
// flyio_snapshotter_operations_total and is timed in
// flyio_snapshotter_operation_duration_seconds. The result is always a
// snapshots.Cleaner: Cleanup answers ErrNotImplemented when sn is not one,
// as containerd's snapshot service would.
func (m *Metrics) Snapshotter(sn snapshots.Snapshotter) snapshots.Snapshotter {
	return &instrumented{sn: sn, m: m}
}

type instrumented struct {
	sn snapshots.Snapshotter
	m  *Metrics
}

var (
	_ snapshots.Snapshotter = (*instrumented)(nil)
	_ snapshots.Cleaner     = (*instrumented)(nil)
)

func (i *instrumented) observe(op string, start time.Time, err error) {
	i.m.ops.WithLabelValues(op, Result(err)).Inc()
	i.m.opDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (i *instrumented) Stat(ctx context.Context, key string) (_ snapshots.Info, err error) {
	defer func(start time.Time) { i.observe(OpStat, start, err) }(time.Now())
	return i.sn.Stat(ctx, key)
}

func (i *instrumented) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (_ snapshots.Info, err error) {
	defer func(start time.Time) { i.observe(OpUpdate, start, err) }(time.Now())
	return i.sn.Update(ctx, info, fieldpaths...)
}

func (i *instrumented) Usage(ctx context.Context, key string) (_ snapshots.Usage, err error) {
	defer func(start time.Time) { i.observe(OpUsage, start, err) }(time.Now())
	return i.sn.Usage(ctx, key)
}

func (i *instrumented) Mounts(ctx context.Context, key string) (_ []mount.Mount, err error) {
	defer func(start time.Time) { i.observe(OpMounts, start, err) }(time.Now())
	return i.sn.Mounts(ctx, key)
}

func (i *instrumented) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) (_ []mount.Mount, err error) {
	defer func(start time.Time) { i.observe(OpPrepare, start, err) }(time.Now())
	return i.sn.Prepare(ctx, key, parent, opts...)
}

func (i *instrumented) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) (_ []mount.Mount, err error) {
	defer func(start time.Time) { i.observe(OpView, start, err) }(time.Now())
	return i.sn.View(ctx, key, parent, opts...)
}

func (i *instrumented) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) (err error) {
	defer func(start time.Time) { i.observe(OpCommit, start, err) }(time.Now())
	return i.sn.Commit(ctx, name, key, opts...)
}

func (i *instrumented) Remove(ctx context.Context, key string) (err error) {
	defer func(start time.Time) { i.observe(OpRemove, start, err) }(time.Now())
	return i.sn.Remove(ctx, key)
}

func (i *instrumented) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) (err error) {
	defer func(start time.Time) { i.observe(OpWalk, start, err) }(time.Now())
	return i.sn.Walk(ctx, fn, filters...)
}

func (i *instrumented) Cleanup(ctx context.Context) (err error) {
	defer func(start time.Time) { i.observe(OpCleanup, start, err) }(time.Now())
	c, ok := i.sn.(snapshots.Cleaner)
	if !ok {
		return errdefs.ErrNotImplemented
	}
	return c.Cleanup(ctx)
}

func (i *instrumented) Close() error { return i.sn.Close() }
