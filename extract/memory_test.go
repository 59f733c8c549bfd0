package extract

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Issue 11 item 3: every directory path was kept for the final pass (and
// every path in Validate's model and Layer mode's written set), so memory
// grew with the total length of the names. What a run keeps must not
// depend on how long the names are: the same number of directories with
// 3.8 KB paths must retain about what they retain with 10-byte paths.

// streamDirs writes, as it is read, a tar of n directories, each with a
// path of about pathLen bytes (all under one deep parent), then a file in
// each.
func streamDirs(n, pathLen int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		parent := "p"
		if pathLen > 300 {
			comp := strings.Repeat("L", 250)
			var parts []string
			for len(strings.Join(parts, "/")) < pathLen-260 {
				parts = append(parts, comp)
			}
			parent = strings.Join(parts, "/")
		}
		// Headers by hand: archive/tar's writer spends more time
		// checking a long name than the extractor does.
		var err error
		for i := 0; i < n && err == nil; i++ {
			d := parent + "/d" + strconv.Itoa(i) + "/"
			_, err = pw.Write(rawPAX(map[string]string{"path": d}, "x", '5', "", ""))
			if err == nil {
				_, err = pw.Write(rawPAX(map[string]string{"path": d + "f"}, "x", '0', "", ""))
			}
		}
		if err == nil {
			_, err = pw.Write(endOfArchive())
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// retained runs the archive into s and returns the live heap while s is
// still held, as it is just before finish.
func retained(t *testing.T, r io.Reader, opts Options, s sink) uint64 {
	t.Helper()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := run(context.Background(), r, opts, s); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

func TestMemoryIndependentOfNameLength(t *testing.T) {
	const n = 5_000
	for _, tc := range []struct {
		name string
		opts Options
		sink func(t *testing.T, opts Options) sink
	}{
		{"validate", Options{}, func(t *testing.T, opts Options) sink { return newModelSink(opts) }},
		{"extract", Options{}, diskSinkFor},
		{"extract-layer", Options{Mode: Layer}, diskSinkFor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			short := retained(t, streamDirs(n, 10), tc.opts, tc.sink(t, tc.opts))
			long := retained(t, streamDirs(n, 3800), tc.opts, tc.sink(t, tc.opts))
			t.Logf("%d directories: %d bytes retained with short paths, %d with 3.8 KB paths", n, short, long)
			// 3.8 KB paths kept as text would be 20 MB and more here.
			if long > short+short/2+4<<20 {
				t.Errorf("retained %d bytes with long names, %d with short ones: memory grows with names", long, short)
			}
		})
	}
}

func diskSinkFor(t *testing.T, opts Options) sink {
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rt, err := openRoot(root, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return newDiskSink(rt, opts.withDefaults())
}
