// Package diag assembles the diagnostics bundle operators attach to a bug
// report: a .tar.gz of small text and JSON files (version, kernel,
// device-mapper, pool, configuration with secrets redacted, recent log,
// database statistics, runs, gc dry run, mounts). The daemon gathers it
// through its admin API; `flyio-image-manager diag` gathers what it can
// itself when no daemon runs. A part that cannot be gathered becomes a
// NAME.error note in the bundle and never stops the rest.
package diag

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/superfly/flyio-image-manager/internal/atomicfile"
)

// File is one file of the bundle.
type File struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// Source gathers the content of one file of the bundle.
type Source struct {
	Name   string
	Gather func(ctx context.Context) ([]byte, error)
}

// ErrorSuffix ends the name of the note written instead of a file that
// could not be gathered.
const ErrorSuffix = ".error"

// Collect runs every source in order. A source that fails (or panics)
// yields NAME.error holding why, and whatever partial content it returned
// is kept as NAME.
func Collect(ctx context.Context, srcs []Source) []File {
	var out []File
	for _, s := range srcs {
		data, err := gather(ctx, s)
		if len(data) > 0 || err == nil {
			out = append(out, File{Name: s.Name, Data: data})
		}
		if err != nil {
			out = append(out, ErrorFile(s.Name, err))
		}
	}
	return out
}

// ErrorFile is the note that says why name is missing or incomplete.
func ErrorFile(name string, err error) File {
	return File{Name: name + ErrorSuffix, Data: []byte(fmt.Sprintf("could not gather %s: %v\n", name, err))}
}

func gather(ctx context.Context, s Source) (data []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.Gather(ctx)
}

// FileName is the default name of a bundle made on host at now:
// flyio-image-manager-diag-<host>-<UTC time>.tar.gz.
func FileName(host string, now time.Time) string {
	host = strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, host)
	return fmt.Sprintf("flyio-image-manager-diag-%s-%s.tar.gz", host, now.UTC().Format("20060102T150405Z"))
}

// Manifest is the contents list: every file with its size, errors last
// so a reader sees at a glance what is missing.
func Manifest(files []File) string {
	var b strings.Builder
	var errs []string
	for _, f := range files {
		if strings.HasSuffix(f.Name, ErrorSuffix) {
			errs = append(errs, strings.TrimSpace(string(f.Data)))
			continue
		}
		fmt.Fprintf(&b, "%8d  %s\n", len(f.Data), f.Name)
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		fmt.Fprintf(&b, "\n%d part(s) could not be gathered:\n", len(errs))
		for _, e := range errs {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	return b.String()
}

// Write writes files as a gzip-compressed tar under the directory dir
// (the bundle's name without .tar.gz), with MANIFEST.txt first.
func Write(w io.Writer, dir string, files []File, now time.Time) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	all := append([]File{{Name: "MANIFEST.txt", Data: []byte(Manifest(files))}}, files...)
	for _, f := range all {
		hdr := &tar.Header{
			Name: path.Join(dir, f.Name), Mode: 0o600, Size: int64(len(f.Data)),
			ModTime: now, Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("bundle file %s: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("bundle file %s: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// WriteFile writes the bundle to path (mode 0600: it describes the host).
// path is often in a shared directory (/tmp, the current one) under a
// name anyone can predict: see atomicfile for why nothing planted there
// is opened.
func WriteFile(path string, files []File, now time.Time) error {
	f, err := atomicfile.Create(path)
	if err != nil {
		return fmt.Errorf("diagnostics bundle: %w", err)
	}
	defer f.Abort()
	dir := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".gz"), ".tar")
	if err := Write(f, dir, files, now); err != nil {
		return fmt.Errorf("diagnostics bundle %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("diagnostics bundle: %w", err)
	}
	return nil
}
