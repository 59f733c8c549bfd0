package main

import (
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"time"
)

type report struct {
	opts        options
	archiveSize int64
	host        string
	start, end  time.Time
	loadStart   string
	loadEnd     string
	results     map[string][]measurement
	treeEntries int
	treeBytes   int64
	treeDiffs   []string
}

var toolNames = map[string]string{
	"flyio":      "flyio extract.Extract",
	"tar":        "GNU tar -xzf",
	"containerd": "containerd's layer applier (core/diff/apply)",
	"archive":    "containerd pkg/archive.Apply alone",
}

func (r *report) describeHost() {
	gz := "klauspost/compress gzip (no igzip or unpigz on PATH)"
	for _, c := range []string{"igzip", "unpigz"} {
		if p, err := exec.LookPath(c); err == nil {
			gz = p + " (found on PATH, so containerd uses it)"
			break
		}
	}
	tarVersion := "?"
	if out, err := exec.Command("tar", "--version").Output(); err == nil {
		tarVersion, _, _ = strings.Cut(string(out), "\n")
	}
	scratch := fmt.Sprintf("scratch: a fresh ext4 per round (mkfs.ext4 -m 0 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0, as for a base), loop-mounted under %s", r.opts.dir)
	if !r.opts.freshFS {
		scratch = fmt.Sprintf("scratch %s on %s", r.opts.dir, fsType(r.opts.dir))
		if r.opts.freshFSWhyNot != "" {
			scratch += " (no fresh filesystem per round: " + r.opts.freshFSWhyNot + ")"
		}
	}
	r.host = fmt.Sprintf("kernel %s, %d CPUs, %s; %s; containerd's gzip decoder: %s",
		kernelRelease(), numCPU(), scratch, tarVersion, gz)
}

func (r *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rootfsbench %s\n", r.start.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "%s\n", r.host)
	fmt.Fprintf(&b, "archive %s: %s gzip, %d entries, %s in regular files\n",
		r.opts.archive, fmtBytes(r.archiveSize), r.treeEntries, fmtBytes(r.treeBytes))
	fmt.Fprintf(&b, "rounds %d, tools in rotating order; load average %s at start, %s at end (%s)\n\n",
		r.opts.n, r.loadStart, r.loadEnd, r.end.Sub(r.start).Round(time.Second))

	b.WriteString("| tool | median time | min – max | median CPU (user+sys) | peak RSS (max) | others' CPU during runs (median) |\n")
	b.WriteString("| ---- | ----------: | --------: | --------------------: | -------------: | -------------------------------: |\n")
	for _, t := range r.opts.tools {
		ms := r.results[t]
		walls := pick(ms, func(m measurement) time.Duration { return m.wall })
		cpus := pick(ms, func(m measurement) time.Duration { return m.cpu })
		var rss int64
		var others []float64
		for _, m := range ms {
			rss = max(rss, m.maxRSS)
			others = append(others, m.otherCPU.Seconds()/m.wall.Seconds())
		}
		fmt.Fprintf(&b, "| %s | %s | %s – %s | %s | %s | %.2f CPUs |\n", toolNames[t],
			fmtDur(median(walls)), fmtDur(minOf(walls)), fmtDur(maxOf(walls)), fmtDur(median(cpus)),
			fmtBytes(rss), medianF(others))
	}

	if len(r.results["flyio"]) > 0 && len(r.opts.tools) > 1 {
		b.WriteString("\n| ratio of times | per round | median of rounds | ratio of medians | target | met? |\n")
		b.WriteString("| -------------- | --------- | ---------------: | ---------------: | ------ | ---- |\n")
		met, targets := 0, 0
		for _, t := range r.opts.tools {
			if t == "flyio" {
				continue
			}
			var per []float64
			var cells []string
			for i, m := range r.results[t] {
				q := r.results["flyio"][i].wall.Seconds() / m.wall.Seconds()
				per = append(per, q)
				cells = append(cells, fmt.Sprintf("%.2f", q))
			}
			med := medianF(per)
			ofMedians := median(pick(r.results["flyio"], wallOf)).Seconds() / median(pick(r.results[t], wallOf)).Seconds()
			target, ok := fmt.Sprintf("≤ %.2f×", r.opts.target), "no"
			switch {
			case t == "archive":
				// Not a baseline: containerd never applies a layer
				// without its diff ID; shown so the digest's cost is seen.
				target, ok = "(reference)", "—"
			case med <= r.opts.target:
				ok = "yes"
				met++
				targets++
			default:
				targets++
			}
			fmt.Fprintf(&b, "| flyio / %s | %s | %.2f× | %.2f× | %s | %s |\n",
				toolNames[t], strings.Join(cells, " "), med, ofMedians, target, ok)
		}
		fmt.Fprintf(&b, "\ntargets met: %d of %d (the median of the per-round ratios decides)\n", met, targets)
	}

	b.WriteString("\nnotes:\n")
	b.WriteString("- after one untimed warm-up run of each tool; time: the child's wall time from start to exit, archive in the page cache, no sync (each run starts after an untimed sync); CPU from wait4 (tar's includes its gzip child), peak RSS from GNU time %M (for tar, the larger of tar and gzip).\n")
	if slices.Contains(r.opts.tools, "containerd") || slices.Contains(r.opts.tools, "archive") {
		b.WriteString("- containerd's layer applier: core/diff/apply's fsApplier.Apply of the blob from a local content store onto a bind mount of the directory, as containerd unpacks a layer (it hashes the uncompressed stream for the diff ID); pkg/archive.Apply alone: DecompressStream into archive.Apply, no digest, no content store (a reference, not a target).\n")
	}
	b.WriteString("- others' CPU: CPU time the machine spent on other processes during each run, in CPUs (from /proc/stat, minus the run's own).\n")
	if len(r.opts.tools) > 1 {
		if len(r.treeDiffs) == 0 {
			fmt.Fprintf(&b, "- the first round's trees are identical (type, mode, owner, link count, size, mtime, symlink target, content hash of %d entries).\n", r.treeEntries)
		} else {
			b.WriteString("- the first round's trees differ:\n")
			for _, d := range r.treeDiffs {
				fmt.Fprintf(&b, "  - %s\n", d)
			}
		}
	}
	return b.String()
}

func wallOf(m measurement) time.Duration { return m.wall }

func pick(ms []measurement, f func(measurement) time.Duration) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = f(m)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianF(fs []float64) float64 {
	if len(fs) == 0 {
		return 0
	}
	s := append([]float64(nil), fs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func maxOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
