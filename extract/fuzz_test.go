package extract

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSentinel is a fixed absolute directory, so seeds (and whatever the
// fuzzer mutates them into) can aim absolute symlinks and names at a real
// directory outside every root and the test can tell if it was touched.
const fuzzSentinel = "/tmp/flyio-extract-fuzz-sentinel"

func fuzzSeeds(t *testing.T) [][]byte {
	seeds := [][]byte{
		mkTar(t, symlink("evil", fuzzSentinel), file("evil/pwned", "x")),
		mkTar(t, symlink("evil", "../sentinel"), file("evil/pwned", "x"), hardlink("h", "evil/secret")),
		mkTar(t, file("a", "a"), hardlink("b", "a"), file("b", "b"), dir("a"), symlink("a", "/")),
		mkTar(t, dir("d"), file("d/.wh..wh..opq", ""), file(".wh.evil", ""), file("rel/.wh.secret", "")),
		mkTar(t, dir("rootfs/"), file("rootfs/x", "x"), symlink("rootfs/l", "../../"+fuzzSentinel), hardlink("rootfs/h", "rootfs/x")),
		mkTar(t, node("fifo", 'p', 0, 0), node("null", '3', 1, 3), file("f", "f").mode(0o4755)),
		mkTar(t, symlink("a", "b"), symlink("b", "a"), file("a/x", "")),
		mkTar(t, file("x", "x").pax("SCHILY.xattr.user.a", "b").pax("SCHILY.xattr.trusted.x", "y")),
		rawPAXFile(map[string]string{"path": "evil/../../x"}, "benign", "x"),
	}
	for _, c := range hostileCases() {
		if c.pre != nil || strings.HasPrefix(c.name, "deep-") {
			// Deep paths take seconds an input (minutes in the walk):
			// mutating them starves the fuzzer. The differential and
			// hostile tests run them.
			continue
		}
		s := &sandbox{dir: "/tmp/x", root: "/tmp/x/root", sentinel: fuzzSentinel}
		ls := c.layers(t, s)
		if len(ls) == 1 && len(ls[0]) < 64<<10 {
			seeds = append(seeds, ls[0])
		}
	}
	return seeds
}

// FuzzExtract feeds arbitrary bytes to Extract (in both modes, with both
// resolvers, over a root that already holds symlinks pointing out) and
// checks that it neither panics nor changes anything outside the root,
// and that it agrees with Validate on the checks that need no filesystem.
func FuzzExtract(f *testing.F) {
	t := &testing.T{}
	for _, s := range fuzzSeeds(t) {
		f.Add(s, uint8(0))
		f.Add(s, uint8(3))
	}
	if err := os.MkdirAll(filepath.Join(fuzzSentinel, "etc"), 0o755); err != nil {
		f.Fatal(err)
	}
	// Created once and never rewritten: fuzz workers are separate
	// processes sharing it, and each compares it with its own snapshot.
	if fh, err := os.OpenFile(filepath.Join(fuzzSentinel, "etc/passwd"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
		fh.WriteString("sentinel")
		fh.Close()
	} else if !errors.Is(err, os.ErrExist) {
		f.Fatal(err)
	}
	global := &sandbox{dir: fuzzSentinel, root: filepath.Join(fuzzSentinel, "no-root")}
	globalBefore := global.snapshot(f)

	f.Fuzz(func(t *testing.T, data []byte, flags uint8) {
		s := newSandbox(t)
		for name, target := range map[string]string{"evil": fuzzSentinel, "rel": "../sentinel", "up": "../../../../.."} {
			if err := os.Symlink(target, filepath.Join(s.root, name)); err != nil {
				t.Fatal(err)
			}
		}
		before := s.snapshot(t)
		opts := fuzzOptions(flags)
		_, err := Extract(context.Background(), bytes.NewReader(data), s.root, opts)
		s.assertUnchanged(t, before)
		global.assertUnchanged(t, globalBefore)

		_, verr := Validate(context.Background(), bytes.NewReader(data), opts)
		if verr == nil && err != nil {
			for _, k := range staticKinds {
				if errors.Is(err, k) {
					t.Fatalf("Validate passed but Extract failed with %v", err)
				}
			}
		}
		// And on an empty root, the same verdict on everything.
		differ(t, data, opts)
		if verr != nil && err == nil {
			for _, k := range staticKinds {
				if errors.Is(verr, k) {
					t.Fatalf("Extract passed but Validate failed with %v", verr)
				}
			}
		}
	})
}

// fuzzOptions are FuzzExtract's options for its flags byte.
func fuzzOptions(flags uint8) Options {
	opts := Options{
		MaxFileSize:    1 << 20,
		MaxTotalSize:   4 << 20,
		MaxEntries:     512,
		AllowDevices:   flags&4 != 0,
		StrictSymlinks: flags&8 != 0,
		forceWalk:      flags&2 != 0,
	}
	if flags&1 != 0 {
		opts.Mode = Layer
	}
	return opts
}
