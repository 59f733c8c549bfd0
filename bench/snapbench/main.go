// Command snapbench compares the flyio snapshotter with containerd's
// built-in devmapper snapshotter on two identical loopback dm-thin pools
// and prints a table of median latencies. It is a benchmark, not a test:
// it exits 0 whether or not the targets are met, and non-zero only when it
// could not measure.
//
// It needs root, device-mapper with the thin-pool target, mkfs.ext4 and
// Debian's dmsetup (the devmapper snapshotter shells out to it). Run it
// through bench/run.sh, which uses the test VM when the host has no dm-thin.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

type options struct {
	iterations  int
	concurrency int
	concReps    int
	cfg         poolConfig
	verbose     bool
	out         string
	compare     bool
	breakdown   bool
	zeroing     bool
	zeroingMiB  int64
	locktime    bool
}

func main() {
	var o options
	var dataMiB, metaMiB, blockKiB, baseMiB int64
	flag.IntVar(&o.iterations, "n", 5, "iterations of each single-snapshot operation (medians are reported)")
	flag.IntVar(&o.concurrency, "concurrency", 64, "concurrent Prepares of one committed image")
	flag.IntVar(&o.concReps, "concurrency-reps", 2, "repetitions of the concurrent Prepare round")
	flag.StringVar(&o.cfg.Dir, "dir", "/var/lib/snapbench", "directory for the pool files and snapshotter roots (emptied first)")
	flag.Int64Var(&dataMiB, "data-mib", 16<<10, "data size of each pool in MiB (sparse)")
	flag.Int64Var(&metaMiB, "metadata-mib", 256, "metadata size of each pool in MiB (sparse)")
	flag.Int64Var(&blockKiB, "block-kib", 128, "pool block size in KiB")
	flag.Int64Var(&baseMiB, "base-mib", 1024, "filesystem size of a parentless snapshot in MiB")
	flag.BoolVar(&o.verbose, "v", false, "log snapshotter debug output")
	flag.BoolVar(&o.compare, "compare", true, "run the flyio vs devmapper comparison")
	flag.BoolVar(&o.breakdown, "breakdown", true, "time the steps of flyio's Prepare and Remove on a pool of their own")
	flag.BoolVar(&o.zeroing, "zeroing", true, "measure write throughput into new thin devices with zero_new_blocks on and off")
	flag.Int64Var(&o.zeroingMiB, "zeroing-mib", 256, "bytes written into each new device of the zeroing benchmark, in MiB")
	flag.StringVar(&o.out, "out", "", "also write the report to this file")
	flag.BoolVar(&o.locktime, "locktime", true, "time Remove and Commit as the caller (containerd, holding its locks) sees them, against the dm-work-inline Remove")
	flag.Parse()
	o.cfg.DataSize = dataMiB << 20
	o.cfg.MetadataSize = metaMiB << 20
	o.cfg.BlockSize = uint32(blockKiB << 10)
	o.cfg.BaseSize = uint64(baseMiB) << 20

	var w io.Writer = os.Stdout
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "snapbench: %v\n", err)
			os.Exit(1)
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	if err := run(context.Background(), w, o); err != nil {
		fmt.Fprintf(os.Stderr, "snapbench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, o options) error {
	if o.iterations < 1 || o.concurrency < 1 || o.concReps < 1 {
		return fmt.Errorf("-n, -concurrency and -concurrency-reps must be at least 1")
	}
	if !dmtest.Available() {
		return fmt.Errorf("device-mapper is not usable here (need root and /dev/mapper/control); run bench/run.sh")
	}
	for _, tool := range []string{"dmsetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not in PATH (apt-get install dmsetup e2fsprogs): %w", tool, err)
		}
	}
	// There is no udev to acknowledge libdevmapper's cookies; without this
	// every dmsetup call of the devmapper snapshotter waits for one.
	os.Setenv("DM_DISABLE_UDEV", "1")
	if o.verbose {
		log.SetLevel("debug")
	} else {
		log.SetLevel("warn")
	}
	if err := os.RemoveAll(o.cfg.Dir); err != nil {
		return err
	}
	if err := os.MkdirAll(o.cfg.Dir, 0o700); err != nil {
		return err
	}

	dmVer, _ := dmpool.DriverVersion()
	fmt.Fprintf(w, "snapbench %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "kernel %s, device-mapper %s, %d CPUs (GOMAXPROCS %d)\n", dmtest.KernelRelease(), dmVer, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "pools: loop files in %s, data %d MiB, metadata %d MiB, block %d KiB, zeroing new blocks (zero_new_blocks), error_if_no_space; base filesystem ext4 %d MiB\n",
		o.cfg.Dir, o.cfg.DataSize>>20, o.cfg.MetadataSize>>20, o.cfg.BlockSize>>10, o.cfg.BaseSize>>20)
	fmt.Fprintf(w, "iterations %d, concurrent round %d Prepares × %d\n\n", o.iterations, o.concurrency, o.concReps)

	if o.compare {
		if err := compare(ctx, w, o); err != nil {
			return err
		}
	}
	if o.breakdown {
		if err := breakdown(ctx, w, o.cfg, o.iterations, o.concurrency); err != nil {
			return err
		}
	}
	if o.locktime {
		if err := lockTime(ctx, w, o.cfg, o.iterations); err != nil {
			return err
		}
	}
	if o.zeroing {
		return zeroingCost(ctx, w, o.cfg, o.iterations, o.zeroingMiB<<20)
	}
	return nil
}

func compare(ctx context.Context, w io.Writer, o options) error {
	fly, err := newFlyio(ctx, o.cfg, "snapbench-flyio")
	if err != nil {
		return err
	}
	defer func() {
		if err := fly.close(); err != nil {
			fmt.Fprintf(os.Stderr, "snapbench: tearing down flyio: %v\n", err)
		}
	}()
	dm, err := newDevmapper(ctx, o.cfg, "snapbench-dm")
	if err != nil {
		return err
	}
	defer func() {
		if err := dm.close(); err != nil {
			fmt.Fprintf(os.Stderr, "snapbench: tearing down devmapper: %v\n", err)
		}
	}()
	both := []*contestant{fly, dm}

	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "snapbench: "+format+"\n", args...)
	}

	// Warm-up, not measured: our first parentless Prepare makes the
	// template (the one mkfs it ever runs); theirs warms mkfs's page cache.
	warm := map[string]time.Duration{}
	for _, c := range both {
		d, err := timed(func() error { _, err := c.sn.Prepare(ctx, "warm", ""); return err })
		if err != nil {
			return fmt.Errorf("%s: warm-up prepare: %w", c.name, err)
		}
		warm[c.name] = d
		if err := c.sn.Remove(ctx, "warm"); err != nil {
			return fmt.Errorf("%s: warm-up remove: %w", c.name, err)
		}
		if err := makeImage(ctx, c.sn, "image"); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	progress("warm-up done: first parentless Prepare flyio %s (makes the template), devmapper %s", fmtDur(warm["flyio"]), fmtDur(warm["devmapper"]))

	rows := []*row{
		{op: "Prepare, parentless (empty ext4)", minRatio: 20, target: "≥ 20×"},
		{op: "Prepare, child of committed image", minRatio: 2, target: "flyio ≤ 0.5× (≥ 2×)"},
		{op: "Commit (after unmount)", target: "—"},
		{op: "Remove, active snapshot", target: "—"},
		{op: "Remove, committed snapshot", target: "—"},
		{op: fmt.Sprintf("%d concurrent Prepares of one image (wall)", o.concurrency), minRatio: 4, target: "≥ 4×"},
	}
	record := func(r *row, c *contestant, d time.Duration) {
		if c == fly {
			r.flyio = append(r.flyio, d)
		} else {
			r.dm = append(r.dm, d)
		}
	}
	for i := 0; i < o.iterations; i++ {
		// Alternate who goes first so drift in a shared TCG host hits
		// both alike.
		order := both
		if i%2 == 1 {
			order = []*contestant{dm, fly}
		}
		for _, c := range order {
			if err := iteration(ctx, c, i, rows, record); err != nil {
				return fmt.Errorf("%s: iteration %d: %w", c.name, i, err)
			}
		}
		progress("iteration %d/%d done", i+1, o.iterations)
	}
	concRow := rows[len(rows)-1]
	for r := 0; r < o.concReps; r++ {
		order := both
		if r%2 == 1 {
			order = []*contestant{dm, fly}
		}
		for _, c := range order {
			d, keys, err := concurrentPrepares(ctx, c.sn, fmt.Sprintf("conc%d", r), "image", o.concurrency)
			for _, k := range keys {
				if rerr := c.sn.Remove(ctx, k); rerr != nil && err == nil {
					err = fmt.Errorf("remove %s: %w", k, rerr)
				}
			}
			if err != nil {
				return fmt.Errorf("%s: concurrent round %d: %w", c.name, r, err)
			}
			record(concRow, c, d)
			progress("%s: %d concurrent Prepares in %s", c.name, o.concurrency, fmtDur(d))
		}
	}
	for _, c := range both {
		if err := c.sn.Remove(ctx, "image"); err != nil {
			return fmt.Errorf("%s: remove image: %w", c.name, err)
		}
	}

	flat := make([]row, len(rows))
	for i, r := range rows {
		flat[i] = *r
	}
	printTable(w, flat)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "notes:\n")
	fmt.Fprintf(w, "- flyio's template was made before measuring (warm): its first parentless Prepare took %s (mkfs once); devmapper's warm-up Prepare took %s.\n",
		fmtDur(warm["flyio"]), fmtDur(warm["devmapper"]))
	fmt.Fprintf(w, "- every timed operation starts after sync(2) (untimed); both snapshotters alternate going first.\n")
	fmt.Fprintf(w, "- the image is one parentless snapshot with 8 × 1 MiB files, committed; each Commit follows writing one 1 MiB file and unmounting (untimed).\n")
	fmt.Fprintf(w, "- devmapper: containerd %s plugins/snapshots/devmapper in-process, dmsetup via exec with DM_DISABLE_UDEV=1, AsyncRemove=false, DiscardBlocks=false.\n", containerdVersion())
	var met, missed []string
	for _, r := range flat {
		if r.minRatio == 0 {
			continue
		}
		if r.met() == "yes" {
			met = append(met, r.op)
		} else {
			missed = append(missed, r.op)
		}
	}
	fmt.Fprintf(w, "targets met: %d of %d\n", len(met), len(met)+len(missed))
	for _, m := range missed {
		fmt.Fprintf(w, "TARGET MISSED: %s\n", m)
	}
	fmt.Fprintln(w)
	return nil
}

// iteration measures one round of the single-snapshot operations on c.
func iteration(ctx context.Context, c *contestant, i int, rows []*row, record func(*row, *contestant, time.Duration)) error {
	empty, ctr, layer := fmt.Sprintf("empty-%d", i), fmt.Sprintf("ctr-%d", i), fmt.Sprintf("layer-%d", i)
	d, err := timed(func() error { _, err := c.sn.Prepare(ctx, empty, ""); return err })
	if err != nil {
		return fmt.Errorf("prepare %s: %w", empty, err)
	}
	record(rows[0], c, d)

	var mounts []mount.Mount
	d, err = timed(func() (err error) {
		mounts, err = c.sn.Prepare(ctx, ctr, "image")
		return err
	})
	if err != nil {
		return fmt.Errorf("prepare %s: %w", ctr, err)
	}
	record(rows[1], c, d)

	if err := writeFiles(mounts, "change", 1, 1<<20); err != nil {
		return err
	}
	d, err = timed(func() error { return c.sn.Commit(ctx, layer, ctr) })
	if err != nil {
		return fmt.Errorf("commit %s: %w", ctr, err)
	}
	record(rows[2], c, d)

	d, err = timed(func() error { return c.sn.Remove(ctx, empty) })
	if err != nil {
		return fmt.Errorf("remove %s: %w", empty, err)
	}
	record(rows[3], c, d)
	d, err = timed(func() error { return c.sn.Remove(ctx, layer) })
	if err != nil {
		return fmt.Errorf("remove %s: %w", layer, err)
	}
	record(rows[4], c, d)
	return nil
}

func containerdVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/containerd/containerd/v2" {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}
