package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"golang.org/x/sys/unix"
)

// timed runs f and returns how long it took. It syncs first, untimed, so
// that writeback left by the previous operation (often the other
// snapshotter's mkfs) is not charged to this one.
func timed(f func() error) (time.Duration, error) {
	unix.Sync()
	start := time.Now()
	err := f()
	return time.Since(start), err
}

// writeFiles mounts mounts, writes n files of size bytes and unmounts, as
// an image unpack or a container would before Commit. It is never timed.
func writeFiles(mounts []mount.Mount, prefix string, n, size int) error {
	dir, err := os.MkdirTemp("", "snapbench-mnt-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := mount.All(mounts, dir); err != nil {
		return fmt.Errorf("mount %v: %w", mounts, err)
	}
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var werr error
	for i := 0; i < n && werr == nil; i++ {
		werr = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d", prefix, i)), buf, 0o644)
	}
	if err := mount.UnmountAll(dir, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return werr
}

// makeImage prepares a parentless snapshot, fills it like a small image
// layer and commits it as name.
func makeImage(ctx context.Context, sn snapshots.Snapshotter, name string) error {
	key := name + "-unpack"
	mounts, err := sn.Prepare(ctx, key, "")
	if err != nil {
		return fmt.Errorf("prepare %s: %w", key, err)
	}
	if err := writeFiles(mounts, "layer", 8, 1<<20); err != nil {
		return err
	}
	if err := sn.Commit(ctx, name, key); err != nil {
		return fmt.Errorf("commit %s: %w", key, err)
	}
	return nil
}

// concurrentPrepares starts n Prepares of parent at once and returns the
// wall time from release to the last one finishing.
func concurrentPrepares(ctx context.Context, sn snapshots.Snapshotter, prefix, parent string, n int) (time.Duration, []string, error) {
	keys := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%d", prefix, i)
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			ready.Done()
			<-start
			_, errs[i] = sn.Prepare(ctx, keys[i], parent)
		}(i)
	}
	ready.Wait()
	unix.Sync()
	t0 := time.Now()
	close(start)
	done.Wait()
	wall := time.Since(t0)
	var ok []string
	var first error
	for i, err := range errs {
		if err == nil {
			ok = append(ok, keys[i])
		} else if first == nil {
			first = fmt.Errorf("prepare %s: %w", keys[i], err)
		}
	}
	return wall, ok, first
}
