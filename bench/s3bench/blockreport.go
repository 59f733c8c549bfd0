package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// formatBlockReport is the block-image table: the fill against dd of the
// same bytes (target ≥ 0.9x) and against the tarball import (A) of the
// same image (target ≥ 3x faster), then what each of the fill's steps
// costs on one CPU, so that a machine whose CPUs are the limit (the
// test VM's emulated ones) shows it.
func formatBlockReport(o options, base *blockBase, rs []blockResult, dd []time.Duration, ph phases, tarball time.Duration) string {
	var w strings.Builder
	bytes := base.m.Bytes()
	var tot, fetch, sync []time.Duration
	for _, r := range rs {
		tot, fetch, sync = append(tot, r.Total), append(fetch, r.Fetch), append(sync, r.Sync)
	}
	mb, md := median(tot), median(dd)
	fmt.Fprintf(&w, "\n### Block image fill: %d chunks of %d MiB, %.0f MiB mapped (%.0f MiB zstd), parallelism %d, %d CPUs, median of %d\n\n",
		len(base.m.Chunks), base.m.ChunkSize>>20, mib(bytes), mib(ph.Compressed), o.blockPar, runtime.NumCPU(), o.n)
	fmt.Fprintf(&w, "| method | median | MB/s of the image | |\n|---|---:|---:|---|\n")
	fmt.Fprintf(&w, "| block image: blockimage.Fill to a thin device | %s | %.1f | fetch %s summed over workers, fdatasync %s |\n",
		mb.Round(time.Millisecond), mbps(bytes, mb), median(fetch).Round(time.Millisecond), median(sync).Round(time.Millisecond))
	fmt.Fprintf(&w, "| dd %d bytes to a thin device | %s | %.1f | |\n", bytes, md.Round(time.Millisecond), mbps(bytes, md))
	fmt.Fprintf(&w, "| (A) tarball import of the same image | %s | %.1f | |\n\n", tarball.Round(time.Millisecond), mbps(bytes, tarball))

	fmt.Fprintf(&w, "One chunk at a time on one CPU (each step's own rate; Fill runs %d at once on %d CPUs):\n\n", o.blockPar, runtime.NumCPU())
	fmt.Fprintf(&w, "| step | time | MB/s (of uncompressed bytes) |\n|---|---:|---:|\n")
	step := func(name string, d time.Duration) {
		fmt.Fprintf(&w, "| %s | %s | %.1f |\n", name, d.Round(time.Millisecond), mbps(bytes, d))
	}
	step("fetch (GET + body)", ph.Fetch)
	step("decompress (zstd)", ph.Decompress)
	step("verify (sha256)", ph.Verify)
	step("write (pwrite to the thin device)", ph.Write)
	step("fdatasync", ph.Sync)
	cpu := ph.Decompress + ph.Verify
	fmt.Fprintf(&w, "| decompress + verify (CPU) | %s | %.1f; on all %d CPUs at best %.1f |\n\n", cpu.Round(time.Millisecond), mbps(bytes, cpu),
		runtime.NumCPU(), mbps(bytes, cpu)*float64(min(runtime.NumCPU(), o.blockPar)))

	check := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "NOT MET"
	}
	vsDD := md.Seconds() / mb.Seconds()
	vsTar := tarball.Seconds() / mb.Seconds()
	fmt.Fprintf(&w, "| target | result | |\n|---|---|---|\n")
	fmt.Fprintf(&w, "| block fill >= 0.9x dd of the same bytes | %.2fx | %s |\n", vsDD, check(vsDD >= 0.9))
	fmt.Fprintf(&w, "| block fill >= 3x faster than the tarball import | %.2fx | %s |\n", vsTar, check(vsTar >= 3))
	return w.String()
}
