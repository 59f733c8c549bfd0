// Command extractmem measures the extractor's peak RSS and time on an
// archive of many entries with long names (issue 11: memory used to grow
// with the total length of the names, 1M entries needed about 8 GB),
// against GNU tar extracting the same stream in the same run.
//
// The archive is generated as it is read, never stored: -entries entries
// (default 1,000,000) in directories whose paths are about 1 KB long, each
// file name 200 bytes. Each subject runs in a child process reading the
// stream on its standard input, so its peak RSS (getrusage ru_maxrss) is
// its own:
//
//	extract   extract.Extract into an empty directory (Rootfs mode)
//	layer     extract.Extract in Layer mode
//	validate  extract.Validate (writes nothing)
//	gnu-tar   tar -x -C DIR (the baseline of the ratios)
//
// It prints a Markdown table. It is a benchmark, not a test: it exits 0
// whatever it measures, non-zero only when it could not measure.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/superfly/flyio-image-manager/extract"
)

func main() {
	child := flag.String("child", "", "internal: run one subject on stdin (extract, layer, validate)")
	dest := flag.String("dest", "", "internal: extraction root for -child")
	entries := flag.Int("entries", 1_000_000, "entries in the generated archive")
	dir := flag.String("dir", os.TempDir(), "where the extractions go (needs room for the inodes)")
	flag.Parse()
	if *child != "" {
		if err := runChild(*child, *dest); err != nil {
			fmt.Fprintln(os.Stderr, "extractmem:", err)
			os.Exit(1)
		}
		return
	}
	if err := bench(*entries, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "extractmem:", err)
		os.Exit(1)
	}
}

func runChild(which, dest string) error {
	opts := extract.Options{Mode: extract.Rootfs, MaxEntries: 1 << 30}
	var err error
	switch which {
	case "extract":
		_, err = extract.Extract(context.Background(), os.Stdin, dest, opts)
	case "layer":
		opts.Mode = extract.Layer
		_, err = extract.Extract(context.Background(), os.Stdin, dest, opts)
	case "validate":
		_, err = extract.Validate(context.Background(), os.Stdin, opts)
	default:
		err = fmt.Errorf("unknown subject %q", which)
	}
	return err
}

type result struct {
	name   string
	wall   time.Duration
	maxRSS int64 // bytes
	err    error
}

func bench(n int, dir string) error {
	work, err := os.MkdirTemp(dir, "extractmem.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var results []result
	for _, s := range []struct {
		name string
		cmd  func(dest string) *exec.Cmd
	}{
		{"gnu-tar", func(d string) *exec.Cmd { return exec.Command("tar", "-x", "-C", d) }},
		{"extract", func(d string) *exec.Cmd { return exec.Command(self, "-child", "extract", "-dest", d) }},
		{"layer", func(d string) *exec.Cmd { return exec.Command(self, "-child", "layer", "-dest", d) }},
		{"validate", func(d string) *exec.Cmd { return exec.Command(self, "-child", "validate") }},
	} {
		dest := filepath.Join(work, s.name)
		if err := os.Mkdir(dest, 0o755); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "extractmem: %s, %d entries...\n", s.name, n)
		results = append(results, measure(s.name, s.cmd(dest), n))
		os.RemoveAll(dest)
	}
	report(os.Stdout, n, results)
	return nil
}

func measure(name string, cmd *exec.Cmd, n int) result {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return result{name: name, err: err}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{name: name, err: err}
	}
	gerr := generate(in, n)
	in.Close()
	werr := cmd.Wait()
	r := result{name: name, wall: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss << 10
	}
	switch {
	case werr != nil:
		r.err = fmt.Errorf("%v: %s", werr, strings.TrimSpace(stderr.String()))
	case gerr != nil:
		r.err = gerr
	}
	return r
}

// generate writes a tar of n entries: directories of about 1 KB paths
// (four 250-byte components) holding 999 files of 200-byte names each.
func generate(w io.Writer, n int) error {
	tw := tar.NewWriter(w)
	long := strings.Repeat("L", 250)
	mtime := time.Unix(1700000000, 0)
	var dir string
	for i := 0; i < n; i++ {
		var h tar.Header
		if i%1000 == 0 {
			dir = strings.Join([]string{long, long, long, long[:240] + strconv.Itoa(100000+i/1000)}, "/") + "/"
			h = tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}
		} else {
			name := dir + strings.Repeat("f", 192) + strconv.Itoa(10000000+i)
			h = tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}
		}
		if err := tw.WriteHeader(&h); err != nil {
			return err
		}
	}
	return tw.Close()
}

func report(w io.Writer, n int, rs []result) {
	var base result
	for _, r := range rs {
		if r.name == "gnu-tar" {
			base = r
		}
	}
	fmt.Fprintf(w, "\n### extractmem: %d entries, ~1 KB directory paths, 200-byte file names (streamed, generated)\n\n", n)
	fmt.Fprintln(w, "| subject | time | time / gnu-tar | peak RSS | RSS / gnu-tar |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range rs {
		if r.err != nil {
			fmt.Fprintf(w, "| %s | failed: %v | | | |\n", r.name, r.err)
			continue
		}
		fmt.Fprintf(w, "| %s | %.2fs | %s | %.1f MiB | %s |\n", r.name, r.wall.Seconds(),
			ratio(float64(r.wall), float64(base.wall), base.err), float64(r.maxRSS)/(1<<20),
			ratio(float64(r.maxRSS), float64(base.maxRSS), base.err))
	}
}

func ratio(a, b float64, berr error) string {
	if berr != nil || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}
