package extract

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// lenientChain40 is chain40 for a layer whose chain ends in the parent
// layer Validate cannot see: s0 -> /u/v (u the layer never writes), s_i
// -> /P/s_{i-1}, deep -> /P/s38, and n files under deep. Validate did
// not remember a resolution that went into the unseen parent, so each
// file cost the chain again, 40 × 2,000 components, where Extract
// resolves "deep" once for consecutive entries (its parent cache).
func lenientChain40(t testing.TB, n int) []byte {
	p := strings.TrimSuffix(strings.Repeat("d/", 2000), "/")
	ents := []ent{dir(p + "/"), symlink(p+"/s0", "/u/v")}
	for i := 1; i < 39; i++ {
		ents = append(ents, symlink(p+"/s"+strconv.Itoa(i), "/"+p+"/s"+strconv.Itoa(i-1)))
	}
	ents = append(ents, symlink("deep", "/"+p+"/s38"))
	for i := range n {
		ents = append(ents, file("deep/f"+strconv.Itoa(i), "x"))
	}
	return mkTar(t, ents...)
}

func TestValidateLenientChainCostLinear(t *testing.T) {
	const n = 1000
	m := newModelSink(layer)
	if !m.lenient {
		t.Fatal("not lenient")
	}
	if _, err := run(context.Background(), bytes.NewReader(lenientChain40(t, n)), layer, m); err != nil {
		t.Fatal(err)
	}
	if limit := int64(200_000 + 10*n); m.steps > limit {
		t.Errorf("%d components looked at for %d entries, want at most %d", m.steps, n, limit)
	}
	t.Logf("%d components for %d entries", m.steps, n)
}

// What is remembered of a resolution into the unseen parent changes when
// the layer makes the name it missed, or replaces what it went through:
// Validate (lenient) and Extract onto a parent that has u/v/ (and w/)
// must agree.
func TestValidateLenientMemoAgreesWithExtract(t *testing.T) {
	for _, tc := range []struct {
		name string
		ents []ent
	}{
		{"made-as-a-file", []ent{symlink("l", "u/v"), file("l/x", "x"), file("u", "now a file"), file("l/y", "y")}},
		{"made-as-a-symlink-to-a-file", []ent{file("f", "f"), symlink("l", "u/v"), file("l/x", "x"), symlink("u", "f"), file("l/y", "y")}},
		{"made-deeper", []ent{symlink("l", "u/v/w"), file("l/x", "x"), file("u/v", "now a file"), file("l/y", "y")}},
		{"made-as-a-directory", []ent{symlink("l", "u/v"), file("l/x", "x"), dir("u/"), file("l/y", "y")}},
		{"nested", []ent{symlink("a", "u"), symlink("l", "a/v"), file("l/x", "x"), file("u", "f"), file("l/y", "y")}},
		{"nested-symlink-replaced", []ent{symlink("a", "u"), symlink("l", "a/v"), file("l/x", "x"), symlink("a", "f"), file("f", "f"), file("l/y", "y")}},
		{"back-out-of-the-parent", []ent{dir("d/"), symlink("l", "u/v/../../d"), file("l/x", "x"), file("d", "now a file"), file("l/y", "y")}},
		{"back-out-kept", []ent{dir("d/"), symlink("l", "u/v/../../d"), file("l/x", "x"), file("l/y", "y")}},
		{"through-a-missed-name-made-elsewhere", []ent{symlink("l", "u/v"), file("l/x", "x"), file("w/u", "not that u"), file("l/y", "y")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := mkTar(t, tc.ents...)
			root := filepath.Join(t.TempDir(), "root")
			for _, d := range []string{"u/v", "w"} {
				if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			_, xerr := Extract(context.Background(), bytes.NewReader(data), root, layer)
			_, verr := Validate(context.Background(), bytes.NewReader(data), layer)
			if verdict(xerr) != verdict(verr) {
				t.Errorf("verdicts differ:\n  extract:  %v\n  validate: %v", xerr, verr)
			}
			if xerr != nil && !errors.Is(xerr, ErrInvalidParent) {
				t.Logf("extract: %v", xerr)
			}
		})
	}
}

// What no memo removes: between two entries through a chain, the archive
// replaces a symlink every link of the chain goes through (L, with the
// same target each time), so each entry resolves the chain afresh. That
// is what the kernel does for Extract on every such entry too (openat2
// has no memo; measured on this archive, Extract took about 2.5 times
// Validate's time), and it is bounded per entry: a path of at most 2,048
// components, 40 symlinks of at most 2,048 each. This test holds
// Validate to that bound per entry, so that a change to the memo cannot
// make an entry cost more than the kernel's own walk.
func TestValidateCostPerEntryBoundedByTheKernelsWalk(t *testing.T) {
	const n = 50
	q := strings.TrimSuffix(strings.Repeat("d/", 800), "/")
	up := strings.Repeat("../", 801)
	ents := []ent{dir("P0/" + q + "/"), symlink("L", "P0"), symlink("s0", "P0")}
	for i := 1; i < 19; i++ { // two symlinks a level (s_i and L): 38, and deep
		ents = append(ents, symlink("s"+strconv.Itoa(i), "L/"+q+"/"+up+"s"+strconv.Itoa(i-1)))
	}
	ents = append(ents, symlink("deep", "s18"))
	for i := range n {
		ents = append(ents, symlink("L", "P0"), file("deep/f"+strconv.Itoa(i), "x"))
	}
	m := newModelSink(Options{})
	if _, err := run(context.Background(), bytes.NewReader(mkTar(t, ents...)), Options{}, m); err != nil {
		t.Fatal(err)
	}
	const perEntry = (maxSymlinks + 1) * MaxPathLen / 2
	if limit := int64(len(ents)) * perEntry; m.steps > limit {
		t.Errorf("%d components looked at for %d entries, want at most %d", m.steps, len(ents), limit)
	}
	t.Logf("%d components for %d entries (%d a chain entry)", m.steps, len(ents), m.steps/n)
}
