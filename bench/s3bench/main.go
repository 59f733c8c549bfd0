// Command s3bench measures how fast process-image fills a base device from
// S3, against the obvious alternative. One generated gzip image tarball is
// put into a local versitygw, then each run fills a fresh, identical
// ext4-formatted dm-thin device with it, either
//
//	(A) streaming: s3fetch's concurrent ranged GETs feed extract.Extract
//	    directly (what the importer does), or
//	(B) baseline: one GET saves the whole object to a file, which is then
//	    extracted,
//
// each in a child process (so its peak RSS, VmHWM, is its own) and each
// finished by syncfs. It also times dd writing the same number of bytes to
// a raw thin device, the most any extraction onto that pool could do. It
// prints a Markdown table of medians and which targets were met: B/A ≥ 1.5,
// peak RSS of A ≤ 64 MiB, A's extraction rate ≥ 70 % of dd's.
//
// It also fills an ext4 base from the same tarball, publishes it as a
// block image (blockimage.Publish of the device's mapped ranges) and
// times blockimage.Fill of it onto a fresh raw thin device against dd of
// as many bytes and against (A): targets ≥ 0.9x dd, ≥ 3x faster than (A).
// One more pass over the chunks, one at a time, times fetch, decompress,
// verify and write apart, to show which of them a slow CPU limits.
//
// It is a benchmark, not a test: it exits 0 whether or not the targets are
// met, and non-zero only when it could not measure. It needs root,
// dm-thin, mkfs.ext4 and versitygw; bench/s3bench/run.sh runs it in the
// test VM when the host has no dm-thin.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/tarballgen"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "child" {
		if err := runChild(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "s3bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "s3bench:", err)
		os.Exit(1)
	}
}

type options struct {
	dir       string
	size      int64
	n         int
	partSize  int64
	conc      int
	versitygw string
	out       string
	connRate  float64
	blockPar  int
}

func run() error {
	var o options
	flag.StringVar(&o.dir, "dir", "/var/lib/s3bench", "scratch directory (pool files, gateway data, mounts)")
	flag.Int64Var(&o.size, "size", 1<<30, "bytes of file content in the generated image (compresses about 2:1)")
	flag.IntVar(&o.n, "n", 3, "runs of each method; medians are reported")
	flag.Int64Var(&o.partSize, "part-size", s3fetch.DefaultPartSize, "streaming: bytes per ranged GET ([s3] part_size)")
	flag.IntVar(&o.conc, "concurrency", s3fetch.DefaultConcurrency, "streaming: ranged GETs ahead of the reader ([s3] concurrency)")
	flag.StringVar(&o.versitygw, "versitygw", "", "versitygw binary (default: PATH, then /var/cache/flyio-image-manager/tools/bin)")
	flag.StringVar(&o.out, "out", "", "also write the report here")
	flag.Float64Var(&o.connRate, "conn-rate", 0, "cap each S3 connection's download at this many MB/s, as S3 does (0: no cap)")
	flag.IntVar(&o.blockPar, "block-parallelism", blockimage.DefaultParallelism, "block image: chunks fetched and written at once")
	flag.Parse()
	if o.versitygw == "" {
		if p, err := exec.LookPath("versitygw"); err == nil {
			o.versitygw = p
		} else {
			o.versitygw = "/var/cache/flyio-image-manager/tools/bin/versitygw"
		}
	}
	ctx := context.Background()
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}

	// The pool: product defaults (128 KiB blocks), room for one device at
	// a time plus slack; devices are deleted after each run.
	devSize := uint64(o.size*3/2+(512<<20)) &^ (1<<20 - 1)
	pool, _, err := dmpool.Open(ctx, dmpool.Config{
		Name:         fmt.Sprintf("s3bench-%d", os.Getpid()),
		DataFile:     filepath.Join(o.dir, "pool-data"),
		MetadataFile: filepath.Join(o.dir, "pool-metadata"),
		DataSize:     int64(devSize)*3 + (2 << 30),
		MetadataSize: 256 << 20,
		BlockSize:    128 << 10,
	})
	if err != nil {
		return fmt.Errorf("pool (needs root and dm-thin): %w", err)
	}
	defer pool.Remove(ctx)

	gw, err := startGateway(ctx, o.versitygw, filepath.Join(o.dir, "gw"))
	if err != nil {
		return err
	}
	defer gw.stop()

	cfg := s3fetch.DefaultConfig()
	cfg.Endpoint, cfg.Region, cfg.Bucket, cfg.PathStyle = gw.endpoint, gw.region, gw.bucket, true
	cfg.PartSize, cfg.Concurrency = units.Size(o.partSize), o.conc
	cfg.DownloadTimeout = 3600
	up, err := s3fetch.New(ctx, cfg, s3fetch.WithCredentials(credsOf(gw)))
	if err != nil {
		return err
	}
	// Downloads go through the per-connection cap when there is one.
	getCfg := cfg
	if o.connRate > 0 {
		th, err := startThrottle(strings.TrimPrefix(gw.endpoint, "http://"), o.connRate*1e6)
		if err != nil {
			return err
		}
		defer th.close()
		getCfg.Endpoint = "http://" + th.addr()
	}
	const key = "images/bench.tar.gz"
	spec := tarballgen.Spec{Seed: 7, SmallFiles: int(o.size / 4 / (6656)), SmallMin: 1 << 10, SmallMax: 12 << 10,
		LargeFiles: int(o.size * 3 / 4 / (6 << 20)), LargeSize: 6 << 20, Compression: tarballgen.Gzip}
	start := time.Now()
	r, sum := tarballgen.Reader(spec)
	info, err := up.Put(ctx, key, r, -1)
	r.Close()
	if err != nil {
		return fmt.Errorf("uploading the image: %w", err)
	}
	st, err := up.Stat(ctx, key)
	if err != nil {
		return err
	}
	logf("generated and uploaded %s: %d files, %d bytes of content, object %d bytes (etag %s) in %s",
		key, sum.Files, sum.Bytes, st.Size, info.ETag, time.Since(start).Round(time.Millisecond))

	// The block image of the same tarball: an ext4 base filled from it,
	// published with its mapped ranges. Fills use a client of their own
	// whose queue is as deep as the fill is wide and whose parts hold a
	// whole chunk, as blockimage.S3Store asks.
	nextID := uint32(1)
	base, err := publishBase(ctx, pool, nextID, devSize, o.dir, up, key, info.ETag)
	nextID++
	if err != nil {
		return err
	}
	defer base.dev.remove(ctx)
	logf("published the base: %d chunks (%d zero), %d bytes, %d compressed, in %s", base.publish.Chunks,
		base.publish.ZeroChunks, base.publish.Bytes, base.publish.UploadedBytes, base.took.Round(time.Millisecond))
	blockCfg := getCfg
	blockCfg.PartSize = blockimage.MaxChunkSize
	blockCfg.DownloadQueueSize = max(blockCfg.DownloadQueueSize, o.blockPar)
	blockCl, err := s3fetch.New(ctx, blockCfg, s3fetch.WithCredentials(credsOf(gw)))
	if err != nil {
		return err
	}
	blockSt := blockimage.NewS3Store(blockCl)

	var a, b []childResult
	var dd, blockDD []time.Duration
	var blocks []blockResult
	var ddBytes int64
	fill := func(mode string) (childResult, error) {
		d, err := newDevice(ctx, pool, nextID, devSize, o.dir, true)
		nextID++
		if err != nil {
			return childResult{}, err
		}
		defer func() {
			if err := d.remove(ctx); err != nil {
				logf("removing %s: %v", d.name, err)
			}
		}()
		dropCaches()
		args, _ := json.Marshal(childArgs{Mode: mode, S3: toWire(getCfg), AccessKey: gw.access, SecretKey: gw.secret, Key: key,
			Root: d.dir, File: filepath.Join(o.dir, "object.tar.gz")})
		self, _ := os.Executable()
		cmd := exec.Command(self, "child", string(args))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return childResult{}, fmt.Errorf("%s run: %w", mode, err)
		}
		var res childResult
		if err := json.Unmarshal(out, &res); err != nil {
			return res, fmt.Errorf("%s run printed %q: %w", mode, out, err)
		}
		logf("%-8s %8s  %6.1f MB/s  peak RSS %5.1f MiB  (%d entries)", mode, res.Total.Round(time.Millisecond),
			mbps(res.Bytes, res.Total), mib(res.MaxRSS), res.Entries)
		return res, nil
	}
	for i := 0; i < o.n; i++ {
		// Alternate which goes first, so neither always runs on a
		// warmer (or more fragmented) pool.
		order := []string{"stream", "download"}
		if i%2 == 1 {
			order = []string{"download", "stream"}
		}
		for _, mode := range order {
			res, err := fill(mode)
			if err != nil {
				return err
			}
			if mode == "stream" {
				a = append(a, res)
			} else {
				b = append(b, res)
			}
		}
		ddBytes = a[len(a)-1].Bytes
		el, err := ddRun(ctx, pool, nextID, devSize, ddBytes)
		nextID++
		if err != nil {
			return err
		}
		logf("dd       %8s  %6.1f MB/s", el.Round(time.Millisecond), mbps(ddBytes, el))
		dd = append(dd, el)

		br, err := blockRun(ctx, pool, nextID, devSize, blockSt, base.m, o.blockPar)
		nextID++
		if err != nil {
			return fmt.Errorf("block fill: %w", err)
		}
		logf("block    %8s  %6.1f MB/s  (%d chunks)", br.Total.Round(time.Millisecond), mbps(br.Stats.Bytes, br.Total), br.Stats.Written)
		blocks = append(blocks, br)
		el, err = ddRun(ctx, pool, nextID, devSize, base.m.Bytes())
		nextID++
		if err != nil {
			return err
		}
		logf("dd block %8s  %6.1f MB/s", el.Round(time.Millisecond), mbps(base.m.Bytes(), el))
		blockDD = append(blockDD, el)
	}
	ph, err := phaseRun(ctx, pool, nextID, devSize, blockSt, base.m)
	nextID++
	if err != nil {
		return fmt.Errorf("block phases: %w", err)
	}

	report := formatReport(o, st.Size, sum, a, b, dd, ddBytes) + formatBlockReport(o, base, blocks, blockDD, ph, median(totals(a)))
	fmt.Print(report)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(report), 0o644)
	}
	return nil
}

// ddRun times dd writing n bytes to a fresh raw thin device, flushed.
func ddRun(ctx context.Context, pool *dmpool.Pool, id uint32, size uint64, n int64) (time.Duration, error) {
	d, err := newDevice(ctx, pool, id, size, "", false)
	if err != nil {
		return 0, err
	}
	defer d.remove(ctx)
	dropCaches()
	start := time.Now()
	out, err := exec.Command("dd", "if=/dev/zero", "of="+d.path, "bs=4M", fmt.Sprintf("count=%d", n), "iflag=count_bytes", "conv=fdatasync").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("dd: %v\n%s", err, out)
	}
	return time.Since(start), nil
}

func dropCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "s3bench: "+format+"\n", args...)
}

func mbps(b int64, d time.Duration) float64 { return float64(b) / d.Seconds() / 1e6 }
func mib(b int64) float64                   { return float64(b) / (1 << 20) }

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func totals(rs []childResult) []time.Duration {
	var out []time.Duration
	for _, r := range rs {
		out = append(out, r.Total)
	}
	return out
}

func maxRSS(rs []childResult) int64 {
	var m int64
	for _, r := range rs {
		m = max(m, r.MaxRSS)
	}
	return m
}

func formatReport(o options, objSize int64, sum *tarballgen.Summary, a, b []childResult, dd []time.Duration, ddBytes int64) string {
	var w strings.Builder
	ma, mb, md := median(totals(a)), median(totals(b)), median(dd)
	var dl []time.Duration
	for _, r := range b {
		dl = append(dl, r.Download)
	}
	bytes := a[0].Bytes
	fmt.Fprintf(&w, "\n### S3 fill: %d files, %.0f MiB tar (%.0f MiB gzip object), median of %d, part_size %d MiB x concurrency %d\n\n",
		sum.Files, mib(bytes), mib(objSize), o.n, o.partSize>>20, o.conc)
	if o.connRate > 0 {
		fmt.Fprintf(&w, "Each S3 connection capped at %.0f MB/s (-conn-rate), as S3 serves one connection.\n\n", o.connRate)
	} else {
		fmt.Fprintf(&w, "No per-connection cap: a local gateway serves a GET as fast as its disk reads.\n\n")
	}
	fmt.Fprintf(&w, "| method | median | tar MB/s | peak RSS (max) |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&w, "| (A) stream S3 -> extract (ours) | %s | %.1f | %.1f MiB |\n", ma.Round(time.Millisecond), mbps(bytes, ma), mib(maxRSS(a)))
	fmt.Fprintf(&w, "| (B) GET to file, then extract | %s (GET %s) | %.1f | %.1f MiB |\n", mb.Round(time.Millisecond), median(dl).Round(time.Millisecond), mbps(bytes, mb), mib(maxRSS(b)))
	fmt.Fprintf(&w, "| dd %d bytes to a thin device | %s | %.1f | |\n\n", ddBytes, md.Round(time.Millisecond), mbps(ddBytes, md))
	ratio := mb.Seconds() / ma.Seconds()
	rate := mbps(bytes, ma) / mbps(ddBytes, md)
	check := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "NOT MET"
	}
	scaledRSS := float64(maxRSS(a))
	fmt.Fprintf(&w, "| target | result | |\n|---|---|---|\n")
	fmt.Fprintf(&w, "| B/A >= 1.5x | %.2fx | %s |\n", ratio, check(ratio >= 1.5))
	fmt.Fprintf(&w, "| peak RSS of A <= 64 MiB | %.1f MiB | %s |\n", mib(int64(scaledRSS)), check(scaledRSS <= 64<<20))
	fmt.Fprintf(&w, "| A's extraction rate >= 70%% of dd | %.0f%% | %s |\n", rate*100, check(rate >= 0.7))
	if objSize < 1<<30 && bytes < 1<<30 {
		fmt.Fprintf(&w, "\n(image smaller than 1 GiB: -size %d)\n", o.size)
	}
	return w.String()
}
