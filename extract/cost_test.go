package extract

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Issue 11 item 2: Validate rebuilt the whole path at every component (a
// 2,000-deep chain took 25 s, 20,000 components did not finish). The cost
// is now the number of components looked at; these tests count it (and
// the bytes allocated, which the old code spent rebuilding paths) rather
// than time it.

// deepChain is a directory per level down to depth, each its own entry.
func deepChain(t testing.TB, depth int) []byte {
	var ents []ent
	for i := 1; i <= depth; i++ {
		ents = append(ents, dir(strings.Repeat("d/", i)))
	}
	return mkTar(t, ents...)
}

// deepThroughSymlinks makes every one of n files resolve through 20,000
// components: a 2,000-deep directory P holding a symlink s back to /P,
// and "deep" -> /P/s/s/s/s/s/s/s/s/s.
func deepThroughSymlinks(t testing.TB, n int) []byte {
	p := strings.TrimSuffix(strings.Repeat("d/", 2000), "/")
	ents := []ent{file(p+"/f", "f"), symlink(p+"/s", "/"+p), symlink("deep", "/"+p+strings.Repeat("/s", 9))}
	for i := range n {
		ents = append(ents, file("deep/f"+strconv.Itoa(i), "x"))
	}
	return mkTar(t, ents...)
}

func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func TestValidateDeepPathsCostLinear(t *testing.T) {
	for _, tc := range []struct {
		name       string
		data       []byte
		components int64 // what a linear resolver looks at, about
	}{
		{"chain-2000", deepChain(t, 2000), 2000 * 2001 / 2},
		{"20000-through-symlinks", deepThroughSymlinks(t, 200), 200 * 20_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			var steps int64
			alloc := allocated(func() {
				m := newModelSink(Options{})
				_, err = run(context.Background(), bytes.NewReader(tc.data), Options{}, m)
				steps = m.steps
			})
			if err != nil {
				t.Fatal(err)
			}
			if steps > 2*tc.components+10_000 {
				t.Errorf("%d components looked at, want about %d", steps, tc.components)
			}
			// The archive itself is a few MB; rebuilding paths costs GB.
			if limit := uint64(64<<20) + 4*uint64(len(tc.data)); alloc > limit {
				t.Errorf("allocated %d bytes, want under %d", alloc, limit)
			}
			t.Logf("%d bytes of archive: %d components, %d bytes allocated", len(tc.data), steps, alloc)
		})
	}
}

// chain40 makes every one of n files under "deep" resolve through 40
// symlinks of 2,000 components each (80,000 components): a 2,000-deep
// directory P holding s0 -> /P and s_i -> /P/s_{i-1}, and deep ->
// /P/s38. Without memoising what a symlink leads to, the cost is n ×
// 80,000.
func chain40(t testing.TB, n int) []byte {
	p := strings.TrimSuffix(strings.Repeat("d/", 2000), "/")
	ents := []ent{dir(p + "/"), symlink(p+"/s0", "/"+p)}
	for i := 1; i < 39; i++ {
		ents = append(ents, symlink(p+"/s"+strconv.Itoa(i), "/"+p+"/s"+strconv.Itoa(i-1)))
	}
	ents = append(ents, symlink("deep", "/"+p+"/s38"))
	for i := range n {
		ents = append(ents, file("deep/f"+strconv.Itoa(i), "x"))
	}
	return mkTar(t, ents...)
}

// Issue 11 review, item 1: a chain of symlinks cost 80,000 components
// per entry through it. What a symlink leads to is now remembered until
// a directory or symlink is replaced or removed, so the cost is the
// chain once plus a few components per entry.
func TestValidateSymlinkChainCostLinear(t *testing.T) {
	const n = 1000
	m := newModelSink(Options{})
	if _, err := run(context.Background(), bytes.NewReader(chain40(t, n)), Options{}, m); err != nil {
		t.Fatal(err)
	}
	// Making P and the symlinks in it: 40 × 2,000; resolving the chain
	// once: 40 × 2,000; each entry: a handful.
	if limit := int64(200_000 + 10*n); m.steps > limit {
		t.Errorf("%d components looked at for %d entries, want at most %d", m.steps, n, limit)
	}
	t.Logf("%d components for %d entries", m.steps, n)
}

// A symlink or directory replaced between the entries that go through
// the chain forgets only what went through it: replacing one no
// remembered resolution met (here "x", 1,000 times) costs nothing more.
func TestValidateSymlinkChainCostReplacingOthers(t *testing.T) {
	const n = 1000
	var ents []ent
	tr := chain40(t, 0)
	for i := range n {
		ents = append(ents, symlink("x", "y"+strconv.Itoa(i)), file("deep/f"+strconv.Itoa(i), "x"))
	}
	data := append(tr[:len(tr)-1024:len(tr)-1024], mkTar(t, ents...)...)
	m := newModelSink(Options{})
	if _, err := run(context.Background(), bytes.NewReader(data), Options{}, m); err != nil {
		t.Fatal(err)
	}
	if limit := int64(200_000 + 20*n); m.steps > limit {
		t.Errorf("%d components looked at for %d entries, want at most %d", m.steps, n, limit)
	}
	t.Logf("%d components for %d entries", m.steps, n)
}
