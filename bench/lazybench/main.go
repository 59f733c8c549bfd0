// Command lazybench measures lazy start: how much sooner a container
// runs on a base imported with process-image --lazy (its thin device's
// external origin served over NBD from a block image in S3) than on one
// imported in full, and how fast a container reads a big file of a lazy
// base while it is still being fetched, against a fully imported one.
//
// One run, one pool, one versitygw, our real daemon and a private
// containerd driven with ctr. A generated gzip image tarball (a busybox
// rootfs plus -size bytes of files) is uploaded, then for -n rounds:
//
//	full:  process-image --s3-key K (the tarball extracted) until the
//	       first line of ctr run --rm REF /bin/cat /etc/variant;
//	       then, in a container on that base, cat of a big file;
//
// then publish-base, and for -n rounds:
//
//	block: process-image --lazy=false (filled from the block image),
//	       to the first line of the same ctr run (a second baseline);
//	lazy:  process-image --lazy to the first line of the same ctr run;
//	       then the big file read on that fresh lazy base.
//
// delete-image before each import; the page cache is dropped before each
// import and each read. It prints a Markdown table of medians with the
// ratio lazy/full (target ≤ 0.1×) and the read rates. It is a benchmark,
// not a test: it exits 0 whether or not the targets are met, non-zero
// only when it could not measure (with the daemon's log tail). It needs
// root, dm-thin, nbd, versitygw and test/tools.sh's containerd and ctr;
// bench/lazybench/run.sh runs it in the test VM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/superfly/flyio-image-manager/internal/tarballgen"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

const (
	key   = "images/lazybench.tar.gz"
	id    = "lazybench"
	ref   = "images.flyio.local/lazybench:latest"
	hello = "hello from lazybench\n"
	// bigFile is the first large file of the generated tree.
	bigFile = "/data/large/l000.bin"
)

type options struct {
	dir, bin, tools, versitygw, busybox, out string
	size, bigSize                            int64
	n, prefetch                              int
}

func main() {
	var o options
	flag.StringVar(&o.dir, "dir", "/var/lib/lazybench", "scratch directory (pool, gateway data, daemon and containerd state)")
	flag.StringVar(&o.bin, "bin", "bin/flyio-image-manager", "the flyio-image-manager binary")
	flag.StringVar(&o.tools, "tools", "/var/cache/flyio-image-manager/tools/bin", "containerd, ctr and the runc shim (test/tools.sh)")
	flag.StringVar(&o.versitygw, "versitygw", "", "versitygw binary (default: in -tools)")
	flag.StringVar(&o.busybox, "busybox", "/bin/busybox", "static busybox for the image's rootfs")
	flag.StringVar(&o.out, "out", "", "also write the report here")
	flag.Int64Var(&o.size, "size", 400<<20, "bytes of file content in the image (uncompressed; compresses about 2:1)")
	flag.Int64Var(&o.bigSize, "big", 64<<20, "bytes of each large file (the one read is one of them)")
	flag.IntVar(&o.n, "n", 3, "rounds of each import; medians are reported")
	flag.IntVar(&o.prefetch, "prefetch", 4, "the daemon's [lazy] prefetch")
	flag.Parse()
	if o.versitygw == "" {
		o.versitygw = filepath.Join(o.tools, "versitygw")
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "lazybench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lazybench: "+format+"\n", args...)
}

func run(o options) error {
	ctx := context.Background()
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	for _, p := range []string{bin, o.versitygw, filepath.Join(o.tools, "containerd"), filepath.Join(o.tools, "ctr"), o.busybox} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	os.RemoveAll(o.dir)
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	gw, err := startGateway(ctx, o.versitygw, filepath.Join(o.dir, "gw"))
	if err != nil {
		return err
	}
	defer gw.stop()
	e, err := newEnv(o.dir, bin, o.tools, gw, o.prefetch)
	if err != nil {
		return err
	}
	defer e.stop(ctx)
	if err := e.start(); err != nil {
		return fail(e, err)
	}
	if err := upload(ctx, gw, o); err != nil {
		return err
	}
	res, err := measure(ctx, e, o)
	if err != nil {
		return fail(e, err)
	}
	report := res.markdown(o)
	fmt.Println(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
	}
	if odd := e.oddLogLines(); odd != "" {
		logf("warnings and errors in the daemon's log:\n%s", odd)
	} else {
		logf("the daemon's log has no warning or error line")
	}
	return nil
}

// fail adds the daemon's log tail to err: a failure of the lazy path is
// reported as it is, not worked around.
func fail(e *env, err error) error {
	return fmt.Errorf("%w\n===== daemon log (last 80 lines) =====\n%s", err, e.logTail(80))
}

// upload generates the image tarball and streams it into the bucket.
func upload(ctx context.Context, gw *gateway, o options) error {
	cfg := s3fetch.DefaultConfig()
	cfg.Endpoint, cfg.Region, cfg.Bucket, cfg.PathStyle = gw.endpoint, gw.region, gw.bucket, true
	cfg.PartSize = units.Size(16 << 20)
	up, err := s3fetch.New(ctx, cfg, s3fetch.WithCredentials(credsOf(gw)))
	if err != nil {
		return err
	}
	large := max(1, int(o.size/2/o.bigSize))
	small := int((o.size - int64(large)*o.bigSize) / 6656)
	spec := tarballgen.Spec{Seed: 11, Busybox: o.busybox, SmallFiles: small, SmallMin: 1 << 10, SmallMax: 12 << 10,
		LargeFiles: large, LargeSize: o.bigSize, Compression: tarballgen.Gzip, Variant: hello}
	start := time.Now()
	r, sum := tarballgen.Reader(spec)
	defer r.Close()
	if _, err := up.Put(ctx, key, r, -1); err != nil {
		return fmt.Errorf("uploading the image: %w", err)
	}
	st, err := up.Stat(ctx, key)
	if err != nil {
		return err
	}
	logf("generated and uploaded %s: %d files, %d bytes of content, object %d bytes, in %s",
		key, sum.Files, sum.Bytes, st.Size, time.Since(start).Round(time.Millisecond))
	return nil
}

func dropCaches() {
	exec.Command("sync").Run()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		logf("dropping the page cache: %v", err)
	}
}

// oddLogLines are the daemon log's warning and error lines, at most 40.
func (e *env) oddLogLines() string {
	b, _ := os.ReadFile(e.daemonLog)
	var odd []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=warn") || strings.Contains(l, "level=error") || strings.Contains(l, "level=fatal") || strings.Contains(l, "panic") {
			odd = append(odd, l)
		}
	}
	if len(odd) > 40 {
		odd = append(odd[:20], append([]string{fmt.Sprintf("... (%d lines cut)", len(odd)-40)}, odd[len(odd)-20:]...)...)
	}
	return strings.Join(odd, "\n")
}
