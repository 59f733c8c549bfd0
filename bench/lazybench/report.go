package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

func median[T any](xs []T, v func(T) float64) float64 {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = v(x)
	}
	sort.Float64s(f)
	if len(f) == 0 {
		return 0
	}
	if len(f)%2 == 1 {
		return f[len(f)/2]
	}
	return (f[len(f)/2-1] + f[len(f)/2]) / 2
}

func secs(d time.Duration) float64 { return d.Seconds() }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func (r *results) markdown(o options) string {
	tot := func(s start) float64 { return secs(s.total) }
	imp := func(s start) float64 { return secs(s.imp) }
	all := func(xs []start) string {
		var l []string
		for _, s := range xs {
			l = append(l, fmt.Sprintf("%.2f", secs(s.total)))
		}
		return strings.Join(l, ", ")
	}
	full, block, lazy := median(r.full, tot), median(r.block, tot), median(r.lazy, tot)
	mbps := func(x read) float64 { return float64(r.bigSize) / 1e6 / x.secs }
	fullMB, lazyMB := median(r.fullRead, mbps), median(r.lazyRead, mbps)
	var b strings.Builder
	fmt.Fprintf(&b, "lazybench: image %s, %d MiB of file content (gzip), %d rounds, medians\n\n", key, o.size>>20, o.n)
	b.WriteString("| measure | median | of which process-image | runs (s) |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| **baseline**: full import (tarball) → first output of `ctr run` | %.2f s | %.2f s | %s |\n", full, median(r.full, imp), all(r.full))
	fmt.Fprintf(&b, "| block fill (`--lazy=false`, published) → first output | %.2f s | %.2f s | %s |\n", block, median(r.block, imp), all(r.block))
	fmt.Fprintf(&b, "| lazy (`--lazy`) → first output | %.2f s | %.2f s | %s |\n", lazy, median(r.lazy, imp), all(r.lazy))
	fmt.Fprintf(&b, "| lazy / full | %.3f× | target ≤ 0.1×: %s | |\n", lazy/full, met(lazy <= 0.1*full))
	fmt.Fprintf(&b, "| lazy / block fill | %.3f× | | |\n", lazy/block)
	rd := func(xs []read) string {
		var l []string
		for _, x := range xs {
			l = append(l, fmt.Sprintf("%.0f", mbps(x)))
		}
		return strings.Join(l, ", ")
	}
	fmt.Fprintf(&b, "| cold read of %s (%d MiB), fully imported base | %.0f MB/s | | %s MB/s |\n", bigFile, r.bigSize>>20, fullMB, rd(r.fullRead))
	fmt.Fprintf(&b, "| read after the start, fresh lazy base (default config; the chunks before the read are in the note below) | %.0f MB/s | | %s MB/s |\n", lazyMB, rd(r.lazyRead))
	fmt.Fprintf(&b, "| lazy / full read rate | %.2f× | | |\n", lazyMB/fullMB)
	if len(r.held) > 0 {
		held, coldMB := median(r.held, tot), median(r.coldRead, mbps)
		fmt.Fprintf(&b, "| lazy, prefetch held off → first output | %.2f s | %.2f s | %s |\n", held, median(r.held, imp), all(r.held))
		fmt.Fprintf(&b, "| lazy held off / full | %.3f× | | |\n", held/full)
		fmt.Fprintf(&b, "| **cold read** (every chunk from S3 on demand, prefetch held off) | %.0f MB/s | | %s MB/s |\n", coldMB, rd(r.coldRead))
		fmt.Fprintf(&b, "| cold / full read rate | %.2f× | | |\n", coldMB/fullMB)
	}
	var at []string
	for _, x := range r.lazyRead {
		at = append(at, fmt.Sprintf("%s %d/%d", x.before.State, x.before.ChunksPresent, x.before.ChunksTotal))
	}
	fmt.Fprintf(&b, "\nOrigin chunks present when each lazy container printed: %s; when each lazy read began: %s.\n",
		strings.Join(r.lazyOriginAtStart, "; "), strings.Join(at, "; "))
	if len(r.coldNote) > 0 {
		fmt.Fprintf(&b, "Cold reads: %s.\n", strings.Join(r.coldNote, "; "))
	}
	fmt.Fprintf(&b, "Origins listed after each delete-image before a lazy import (and at the end): %s.\n", strings.Join(r.originsAfterDelete, "; "))
	return b.String()
}
