package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"

	"github.com/superfly/flyio-image-manager/extract"
)

// runChild is the body of `rootfsbench child TOOL ARCHIVE DIR`: one
// extraction in a process of its own, so that the parent's wait4 reports
// this extraction's own CPU time and peak RSS.
func runChild(tool, archivePath, dir string) error {
	// Interrupted (Ctrl-C reaches the whole process group), every tool
	// stops through its context rather than dying mid-way: containerd's
	// applier then unmounts its temporary bind mount of dir, which would
	// otherwise hold the round's filesystem (and its loop device).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := os.Open(archivePath)
	if err != nil {
		return err
	}
	defer f.Close()
	switch tool {
	case "flyio":
		// What the snapshotter and process-image do: the default Rootfs
		// options, every check on, both digests computed.
		_, err := extract.Extract(ctx, f, dir, extract.Options{Mode: extract.Rootfs})
		return err
	case "containerd":
		return applyLayer(ctx, dir)
	case "archive":
		// containerd's pkg/archive.Apply alone: DecompressStream (klauspost gzip,
		// or igzip/unpigz when on PATH) into pkg/archive.Apply.
		ds, err := compression.DecompressStream(f)
		if err != nil {
			return err
		}
		defer ds.Close()
		var opts []archive.ApplyOpt
		if os.Geteuid() != 0 {
			opts = append(opts, archive.WithNoSameOwner())
		}
		_, err = archive.Apply(ctx, dir, ds, opts...)
		return err
	}
	return fmt.Errorf("unknown tool %q", tool)
}
