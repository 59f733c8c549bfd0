package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// zeroingCost measures what [pool] zero_new_blocks costs: write
// throughput into new thin devices on two pools that differ only in
// skip_block_zeroing. The baseline is the pool without zeroing, measured
// in the same run. Two patterns: 4 KiB into every pool block (each write
// provisions a block, which zeroing fills first: the worst case) and
// whole-block writes (dm-thin skips zeroing a block a write covers).
func zeroingCost(ctx context.Context, w io.Writer, cfg poolConfig, n int, devBytes int64) (retErr error) {
	pools := map[bool]*dmpool.Pool{}
	for _, zero := range []bool{false, true} {
		name := "snapbench-nozero"
		if zero {
			name = "snapbench-zero"
		}
		c := cfg
		c.SkipBlockZeroing = !zero
		p, err := c.open(ctx, name)
		if err != nil {
			return err
		}
		defer func() { retErr = errors.Join(retErr, teardownPool(ctx, p)) }()
		pools[zero] = p
	}
	bs := int64(cfg.BlockSize)
	type pattern struct {
		name  string
		chunk int64 // bytes per write, one write per pool block
	}
	patterns := []pattern{{"4 KiB into each new block", 4096}, {"whole-block writes", bs}}
	buf, err := unix.Mmap(-1, 0, int(bs), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i)
	}

	fmt.Fprintf(w, "\n### Cost of zero_new_blocks: write throughput into new thin devices\n\n")
	fmt.Fprintf(w, "%d MiB per device, O_DIRECT, one write per %d KiB block, fsync; medians of %d; baseline: the same pool without zeroing (skip_block_zeroing), same run.\n\n",
		devBytes>>20, bs>>10, n)
	fmt.Fprintln(w, "| writes | zeroing off (baseline) | zeroing on | ratio (on/off throughput) |")
	fmt.Fprintln(w, "|---|---|---|---|")
	id := uint32(1)
	for _, pt := range patterns {
		ds := map[bool][]time.Duration{}
		for i := 0; i < n; i++ {
			// Alternate who goes first so host drift hits both alike.
			for _, zero := range []bool{i%2 == 0, i%2 != 0} {
				d, err := fillNewThin(ctx, pools[zero], id, devBytes, buf[:pt.chunk], bs)
				if err != nil {
					return fmt.Errorf("zeroing=%v, %s: %w", zero, pt.name, err)
				}
				id++
				ds[zero] = append(ds[zero], d)
			}
		}
		written := float64(devBytes/bs*pt.chunk) / (1 << 20)
		off, on := median(ds[false]), median(ds[true])
		fmt.Fprintf(w, "| %s | %.1f MiB/s (%s) | %.1f MiB/s (%s) | %.2f× |\n", pt.name,
			written/off.Seconds(), fmtDur(off), written/on.Seconds(), fmtDur(on), off.Seconds()/on.Seconds())
	}
	return nil
}

// fillNewThin creates thin id, writes chunk at the start of every block
// of its first size bytes, syncs, and deletes it; it returns the time of
// the writes and the sync.
func fillNewThin(ctx context.Context, p *dmpool.Pool, id uint32, size int64, chunk []byte, bs int64) (_ time.Duration, retErr error) {
	if err := p.CreateThin(ctx, id); err != nil {
		return 0, err
	}
	defer func() { retErr = errors.Join(retErr, p.Delete(ctx, id)) }()
	name := fmt.Sprintf("%s-thin-%d", p.Name(), id)
	path, err := p.Activate(ctx, name, id, uint64(size))
	if err != nil {
		return 0, err
	}
	defer func() { retErr = errors.Join(retErr, p.Deactivate(ctx, name)) }()
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	for off := int64(0); off < size; off += bs {
		if _, err := f.WriteAt(chunk, off); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
