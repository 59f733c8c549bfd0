package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// row is one operation measured on both snapshotters.
type row struct {
	op        string
	flyio, dm []time.Duration
	minRatio  float64 // 0: no target
	target    string
}

func (r row) ratio() float64 {
	f := median(r.flyio)
	if f == 0 {
		return 0
	}
	return float64(median(r.dm)) / float64(f)
}

func (r row) met() string {
	if r.minRatio == 0 {
		return "—"
	}
	if r.ratio() >= r.minRatio {
		return "yes"
	}
	return "NO"
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
}

// printTable writes the rows as a Markdown table, so the output can be
// pasted into docs/benchmarks.md as is.
func printTable(w io.Writer, rows []row) {
	header := []string{"operation", "flyio median", "devmapper median", "ratio (devmapper/flyio)", "target", "met?"}
	cells := [][]string{header}
	for _, r := range rows {
		cells = append(cells, []string{
			r.op,
			fmt.Sprintf("%s (n=%d)", fmtDur(median(r.flyio)), len(r.flyio)),
			fmt.Sprintf("%s (n=%d)", fmtDur(median(r.dm)), len(r.dm)),
			fmt.Sprintf("%.1f×", r.ratio()),
			r.target,
			r.met(),
		})
	}
	widths := make([]int, len(header))
	for _, c := range cells {
		for i, s := range c {
			widths[i] = max(widths[i], len([]rune(s)))
		}
	}
	line := func(c []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, s := range c {
			b.WriteString(" " + s + strings.Repeat(" ", widths[i]-len([]rune(s))) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(cells[0])
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", widths[i])
	}
	line(sep)
	for _, c := range cells[1:] {
		line(c)
	}
}
