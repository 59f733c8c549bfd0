package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// hostileCase is one archive (or a sequence of layers applied in order)
// and what must come of it. Every case, whatever its outcome, is also
// checked to have left the sandbox outside the root untouched.
type hostileCase struct {
	name string
	// layers builds the archives; the sandbox is passed so cases can aim
	// absolute names at the real sentinel directory.
	layers func(t *testing.T, s *sandbox) [][]byte
	opts   Options
	// pre populates the root before the first layer (a parent layer).
	pre func(t *testing.T, s *sandbox)
	// wantErr is matched with errors.Is; nil means success.
	wantErr error
	// wantAnyErr: some error is expected, of no particular kind (an
	// operation refused by the kernel inside the root).
	wantAnyErr bool
	// wantMsg are substrings of the error message (the entry name).
	wantMsg []string
	check   func(t *testing.T, s *sandbox, res Result)
}

func one(ents ...ent) func(*testing.T, *sandbox) [][]byte {
	return func(t *testing.T, _ *sandbox) [][]byte { return [][]byte{mkTar(t, ents...)} }
}

func raw(b ...[]byte) func(*testing.T, *sandbox) [][]byte {
	return func(*testing.T, *sandbox) [][]byte { return [][]byte{bytes.Join(b, nil)} }
}

func writeIn(t *testing.T, root, name, body string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func deepName(levels int, leaf string) string {
	return strings.Repeat("d/", levels) + leaf
}

var layer = Options{Mode: Layer}

// t0 builds fixed archives outside a test (mkTar only fails on bugs).
var t0 = &testing.T{}

func hostileCases() []hostileCase {
	return []hostileCase{
		// --- names ---------------------------------------------------
		{name: "dotdot-prefix", layers: one(file("../escape", "x")), wantErr: ErrPathTraversal, wantMsg: []string{"path traversal detected: ../escape"}},
		{name: "dotdot-deep", layers: one(file("../../../../../../../../tmp/escape", "x")), wantErr: ErrPathTraversal},
		{name: "slash-dotdot", layers: one(file("/../sentinel/secret", "pwned")), wantErr: ErrPathTraversal, wantMsg: []string{"/../sentinel/secret"}},
		{name: "rootfs-dotdot", layers: one(dir("rootfs/"), file("rootfs/../../etc/passwd", "x")), wantErr: ErrPathTraversal, wantMsg: []string{"rootfs/../../etc/passwd"}},
		{name: "inner-dotdot", layers: one(dir("a/"), file("a/../b", "x")), wantErr: ErrPathTraversal},
		{name: "dotdot-dir", layers: one(dir("..")), wantErr: ErrPathTraversal},
		{
			name: "absolute-name-lands-inside",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{mkTar(t, file(s.sentinel+"/secret", "pwned"), file("/etc/passwd", "inside"))}
			},
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, s.sentinel, "secret")); got != "pwned" {
					t.Errorf("got %q", got)
				}
				if got := readFile(t, filepath.Join(s.root, "etc/passwd")); got != "inside" {
					t.Errorf("got %q", got)
				}
			},
		},
		{name: "empty-name", layers: raw(rawHeader("", '0', 0, ""), endOfArchive()), wantErr: ErrInvalidName},
		{
			name:    "pax-path-overrides-benign-name",
			layers:  raw(rawPAXFile(map[string]string{"path": "../../sentinel/secret"}, "benign", "pwned"), endOfArchive()),
			wantErr: ErrPathTraversal, wantMsg: []string{"../../sentinel/secret"},
		},
		{
			name:    "pax-linkpath-escape",
			layers:  raw(mkTar(t0, file("a", "x"))[:1024], rawPAX(map[string]string{"linkpath": "../../sentinel/secret"}, "b", '1', "a", ""), endOfArchive()),
			wantErr: ErrHardlinkEscape, wantMsg: []string{"b -> ../../sentinel/secret"},
		},
		{
			name:    "gnu-longname-traversal",
			layers:  one(file(strings.Repeat("x/", 80)+"../../"+strings.Repeat("../", 100)+"escape", "x").format(tar.FormatGNU)),
			wantErr: ErrPathTraversal,
		},
		{
			name:    "pax-path-with-nul",
			layers:  raw(rawPAXFile(map[string]string{"path": "a\x00/../../x"}, "benign", "x"), endOfArchive()),
			wantErr: ErrCorrupt, // archive/tar refuses NUL in PAX paths before we see them
		},
		{name: "component-256", layers: one(file(strings.Repeat("c", 256), "x")), wantErr: ErrInvalidName, wantMsg: []string{"component longer than 255"}},
		{name: "component-255-ok", layers: one(file(strings.Repeat("c", 255), "x"))},
		{name: "path-too-long", layers: one(file(deepName(3000, "f"), "x")), wantErr: ErrInvalidName, wantMsg: []string{"4096"}},
		{
			name:   "deep-nesting-2000-levels",
			layers: one(file(deepName(2000, "f"), "deep")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, deepName(2000, "f"))); got != "deep" {
					t.Errorf("got %q", got)
				}
			},
		},

		// --- symlinks (CVE-2025-45582 and friends) -------------------
		{
			name: "symlink-abs-to-sentinel-then-write-through",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{mkTar(t, symlink("evil", s.sentinel), file("evil/secret", "pwned"))}
			},
			// evil resolves to <root><sentinel path>, which does not exist:
			// the parent cannot be made through a dangling symlink.
			wantAnyErr: true, wantMsg: []string{"evil/secret"},
		},
		{
			name:       "symlink-rel-out-then-write-through",
			layers:     one(symlink("evil", "../sentinel"), file("evil/secret", "pwned")),
			wantAnyErr: true, wantMsg: []string{"evil/secret"},
		},
		{
			name:   "symlink-rel-out-clamped-into-root",
			layers: one(dir("sentinel"), symlink("evil", "../../../sentinel"), file("evil/secret", "pwned")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "sentinel/secret")); got != "pwned" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name:   "symlink-to-slash-then-file-under-it",
			layers: one(symlink("hostroot", "/"), file("hostroot/etc/passwd", "inside"), file("hostroot/"+"tmp/x", "x")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "etc/passwd")); got != "inside" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name: "symlink-sibling-link-then-write",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				// sentinel-link is a real symlink next to the root.
				return [][]byte{mkTar(t, symlink("s", "../sentinel-link"), file("s/etc/passwd", "pwned"))}
			},
			wantAnyErr: true,
		},
		{
			name: "cve-2025-45582-two-layers-absolute",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{
					mkTar(t, symlink("etc", s.sentinel+"/etc")),
					mkTar(t, file("etc/passwd", "pwned")),
				}
			},
			opts:       layer,
			wantAnyErr: true, wantMsg: []string{"etc/passwd"},
		},
		{
			name: "cve-2025-45582-two-layers-relative-clamped",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{
					mkTar(t, dir("sentinel"), dir("sentinel/etc"), symlink("etc", "../../sentinel/etc")),
					mkTar(t, file("etc/passwd", "written inside")),
				}
			},
			opts: layer,
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "sentinel/etc/passwd")); got != "written inside" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name: "parent-layer-symlink-replaced-by-dir",
			pre: func(t *testing.T, s *sandbox) {
				if err := os.Symlink(s.sentinel, filepath.Join(s.root, "lib")); err != nil {
					t.Fatal(err)
				}
			},
			layers: one(dir("lib"), file("lib/secret", "new")),
			opts:   layer,
			check: func(t *testing.T, s *sandbox, _ Result) {
				fi, err := os.Lstat(filepath.Join(s.root, "lib"))
				if err != nil || !fi.IsDir() {
					t.Fatalf("lib should be a directory now: %v %v", fi, err)
				}
			},
		},
		{
			name:       "symlink-loop",
			layers:     one(symlink("a", "b"), symlink("b", "a"), file("a/x", "x")),
			wantAnyErr: true, wantMsg: []string{"a/x"},
		},
		{
			name:    "strict-symlink-escape",
			layers:  one(dir("a"), symlink("a/passwd", "../../etc/passwd")),
			opts:    Options{StrictSymlinks: true},
			wantErr: ErrSymlinkEscape, wantMsg: []string{"symlink target escapes base directory: a/passwd -> ../../etc/passwd"},
		},
		{
			name:   "strict-symlink-absolute-ok",
			layers: one(dir("bin"), file("bin/busybox", "bb"), symlink("bin/sh", "/bin/busybox"), symlink("lib64", "usr/lib")),
			opts:   Options{StrictSymlinks: true},
			check: func(t *testing.T, s *sandbox, _ Result) {
				if l, _ := os.Readlink(filepath.Join(s.root, "bin/sh")); l != "/bin/busybox" {
					t.Errorf("target not verbatim: %q", l)
				}
			},
		},
		{
			name:   "lenient-symlink-stored-verbatim",
			layers: one(symlink("up", "../../../../etc/shadow")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if l, _ := os.Readlink(filepath.Join(s.root, "up")); l != "../../../../etc/shadow" {
					t.Errorf("got %q", l)
				}
			},
		},

		// --- hardlinks ------------------------------------------------
		{name: "hardlink-dotdot", layers: one(hardlink("x", "../sentinel/secret")), wantErr: ErrHardlinkEscape, wantMsg: []string{"x -> ../sentinel/secret"}},
		{
			name: "hardlink-absolute-host-path",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{mkTar(t, hardlink("x", s.sentinel+"/secret"))}
			},
			wantErr: ErrInvalidHardlink, wantMsg: []string{"target not found"},
		},
		{
			name: "hardlink-via-symlink-out",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{mkTar(t, symlink("s", s.sentinel), hardlink("x", "s/secret"))}
			},
			wantErr: ErrInvalidHardlink,
		},
		{
			name:    "hardlink-via-relative-symlink-out",
			layers:  one(symlink("s", "../sentinel"), hardlink("x", "s/secret")),
			wantErr: ErrInvalidHardlink,
		},
		{
			name:   "hardlink-to-symlink-pointing-out",
			layers: one(symlink("s", "/etc/shadow"), hardlink("h", "s")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if l, err := os.Readlink(filepath.Join(s.root, "h")); err != nil || l != "/etc/shadow" {
					t.Errorf("h should be the symlink itself: %q %v", l, err)
				}
			},
		},
		{name: "hardlink-to-dir", layers: one(dir("d"), hardlink("h", "d")), wantErr: ErrInvalidHardlink, wantMsg: []string{"target is a directory"}},
		{name: "hardlink-to-missing", layers: one(hardlink("h", "nope")), wantErr: ErrInvalidHardlink},
		{
			name:   "hardlink-then-overwrite-no-write-through",
			layers: one(file("a", "original"), hardlink("b", "a"), file("b", "replacement")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "a")); got != "original" {
					t.Errorf("a was written through: %q", got)
				}
				if got := readFile(t, filepath.Join(s.root, "b")); got != "replacement" {
					t.Errorf("b = %q", got)
				}
			},
		},
		{
			name: "parent-hardlink-then-overwrite",
			pre: func(t *testing.T, s *sandbox) {
				writeIn(t, s.root, "bin/a", "lower")
				if err := os.Link(filepath.Join(s.root, "bin/a"), filepath.Join(s.root, "bin/b")); err != nil {
					t.Fatal(err)
				}
			},
			layers: one(file("bin/b", "upper")),
			opts:   layer,
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "bin/a")); got != "lower" {
					t.Errorf("bin/a written through: %q", got)
				}
			},
		},
		{
			name:   "file-over-symlink-does-not-follow",
			layers: one(symlink("f", "/etc/shadow-target"), file("f", "new")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				fi, _ := os.Lstat(filepath.Join(s.root, "f"))
				if fi == nil || !fi.Mode().IsRegular() {
					t.Errorf("f should be a regular file")
				}
				mustNotExist(t, filepath.Join(s.root, "etc/shadow-target"))
			},
		},

		// --- type changes ----------------------------------------------
		{
			name:   "file-then-dir",
			layers: one(file("x", "x"), dir("x"), file("x/y", "y")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "x/y")); got != "y" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name:   "nonempty-dir-then-file",
			layers: one(dir("x"), dir("x/sub"), file("x/sub/y", "y"), file("x", "now a file")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "x")); got != "now a file" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name:   "dir-then-symlink-then-file-under",
			layers: one(dir("x"), file("x/y", "y"), symlink("x", "/"), file("x/z", "z")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "z")); got != "z" {
					t.Errorf("got %q", got)
				}
				mustNotExist(t, filepath.Join(s.root, "y"))
			},
		},
		{
			name:   "symlink-then-dir",
			layers: one(symlink("x", "/etc"), dir("x"), file("x/f", "f")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				mustNotExist(t, filepath.Join(s.root, "etc/f"))
				if got := readFile(t, filepath.Join(s.root, "x/f")); got != "f" {
					t.Errorf("got %q", got)
				}
			},
		},
		{name: "root-as-file", layers: one(file(".", "x")), wantErr: ErrInvalidName},
		{name: "root-as-symlink", layers: one(symlink("/", "/etc")), wantErr: ErrInvalidName},
		{
			name:   "root-dir-entry-sets-root-mode",
			layers: one(dir("./").mode(0o750), file("a", "a")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				fi, err := os.Stat(s.root)
				if err != nil || fi.Mode().Perm() != 0o750 {
					t.Errorf("root: %v %v", fi, err)
				}
			},
		},

		// --- whiteouts ---------------------------------------------------
		{name: "whiteout-dotdot-path", layers: one(file("../.wh.x", "")), opts: layer, wantErr: ErrPathTraversal},
		{name: "whiteout-dotdot-target", layers: one(file(".wh...", "")), opts: layer, wantErr: ErrInvalidWhiteout, wantMsg: []string{".wh..."}},
		{name: "whiteout-dot-target", layers: one(file("etc/.wh..", "")), opts: layer, wantErr: ErrInvalidWhiteout},
		{name: "whiteout-empty-target", layers: one(file("etc/.wh.", "")), opts: layer, wantErr: ErrInvalidWhiteout},
		{
			name: "whiteout-through-symlink-out",
			pre: func(t *testing.T, s *sandbox) {
				if err := os.Symlink(s.sentinel, filepath.Join(s.root, "evil")); err != nil {
					t.Fatal(err)
				}
			},
			layers: one(file("evil/.wh.secret", "")),
			opts:   layer,
		},
		{
			name: "whiteout-symlink-itself",
			pre: func(t *testing.T, s *sandbox) {
				if err := os.Symlink(s.sentinel, filepath.Join(s.root, "evil")); err != nil {
					t.Fatal(err)
				}
			},
			layers: one(file(".wh.evil", "")),
			opts:   layer,
			check: func(t *testing.T, s *sandbox, _ Result) {
				mustNotExist(t, filepath.Join(s.root, "evil"))
			},
		},
		{
			name: "opaque-at-root",
			pre: func(t *testing.T, s *sandbox) {
				writeIn(t, s.root, "etc/passwd", "lower")
				writeIn(t, s.root, "old", "lower")
			},
			layers: one(file("new", "upper"), file(".wh..wh..opq", "")),
			opts:   layer,
			check: func(t *testing.T, s *sandbox, _ Result) {
				mustNotExist(t, filepath.Join(s.root, "etc"))
				mustNotExist(t, filepath.Join(s.root, "old"))
				mustNotExist(t, filepath.Join(s.root, ".wh..wh..opq"))
				if got := readFile(t, filepath.Join(s.root, "new")); got != "upper" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name: "opaque-through-symlink-out",
			pre: func(t *testing.T, s *sandbox) {
				if err := os.Symlink(s.sentinel, filepath.Join(s.root, "evil")); err != nil {
					t.Fatal(err)
				}
			},
			layers: one(file("evil/.wh..wh..opq", "")),
			opts:   layer,
		},
		{
			name:   "whiteout-in-rootfs-mode-not-written",
			layers: one(file("a", "a"), file(".wh.a", "")),
			check: func(t *testing.T, s *sandbox, res Result) {
				mustNotExist(t, filepath.Join(s.root, ".wh.a"))
				if got := readFile(t, filepath.Join(s.root, "a")); got != "a" {
					t.Errorf("got %q", got)
				}
				if len(res.Skipped) != 1 {
					t.Errorf("skipped = %v", res.Skipped)
				}
			},
		},

		// --- sizes and bombs ---------------------------------------------
		{
			name: "file-too-large-default-limit",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				// A header claiming 2 GiB; the data never comes.
				return [][]byte{rawHeader("big.img", '0', 2<<30, "")}
			},
			wantErr: ErrFileTooLarge, wantMsg: []string{"file too large: big.img: 2 GiB (max 1 GiB)"},
		},
		{
			name: "gzip-bomb-file",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{gz(t, mkTar(t, ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Size: 64 << 20, Mode: 0o644}, body: make([]byte, 64<<20)}))}
			},
			opts:    Options{MaxFileSize: 1 << 20},
			wantErr: ErrFileTooLarge, wantMsg: []string{"bomb: 64 MiB (max 1 MiB)"},
		},
		{
			name: "gzip-bomb-total",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				var ents []ent
				for i := range 20 {
					ents = append(ents, ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f" + string(rune('a'+i)), Size: 1 << 20, Mode: 0o644}, body: make([]byte, 1<<20)})
				}
				return [][]byte{gz(t, mkTar(t, ents...))}
			},
			opts:    Options{MaxTotalSize: 8 << 20},
			wantErr: ErrArchiveTooLarge,
		},
		{
			name: "gzip-bomb-trailing-padding",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				b := append(mkTar(t, file("a", "a")), make([]byte, 32<<20)...)
				return [][]byte{gz(t, b)}
			},
			opts:    Options{MaxTotalSize: 4 << 20},
			wantErr: ErrArchiveTooLarge,
		},
		{
			name: "zstd-bomb-file",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{zst(t, mkTar(t, ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "zbomb", Size: 64 << 20, Mode: 0o644}, body: make([]byte, 64<<20)}))}
			},
			opts:    Options{MaxFileSize: 1 << 20},
			wantErr: ErrFileTooLarge, wantMsg: []string{"zbomb"},
		},
		{
			name: "zstd-bomb-trailing-padding",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{zst(t, append(mkTar(t, file("a", "a")), make([]byte, 32<<20)...))}
			},
			opts:    Options{MaxTotalSize: 4 << 20},
			wantErr: ErrArchiveTooLarge,
		},
		{
			name: "zstd-huge-window",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{zstdFrameWithWindow(30, mkTar(t, file("a", strings.Repeat("z", 4096))))}
			},
			wantErr: ErrCorrupt,
		},
		{
			name: "too-many-entries",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				var ents []ent
				for i := range 11 {
					ents = append(ents, file("f"+strings.Repeat("x", i), ""))
				}
				return [][]byte{mkTar(t, ents...)}
			},
			opts:    Options{MaxEntries: 10},
			wantErr: ErrTooManyEntries, wantMsg: []string{"fxxxxxxxxxx (max 10)"},
		},

		// --- truncation and corruption -------------------------------------
		{
			name: "truncated-in-header",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				b := mkTar(t, file("a", "aaaa"), file("b", "bbbb"))
				return [][]byte{b[:1024+300]}
			},
			wantErr: ErrTruncated, wantMsg: []string{"a (reading the next header)"},
		},
		{
			name: "truncated-mid-body",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				b := mkTar(t, file("a", strings.Repeat("a", 5000)))
				return [][]byte{b[:512+2000]}
			},
			wantErr: ErrTruncated, wantMsg: []string{"truncated archive: a"},
		},
		{
			name: "truncated-at-block-boundary",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				b := mkTar(t, file("a", "aaaa"), file("b", "bbbb"))
				return [][]byte{b[:2048]}
			},
			wantErr: ErrTruncated, wantMsg: []string{"b (stream ends"},
		},
		{
			name: "truncated-gzip",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				b := gz(t, mkTar(t, file("a", strings.Repeat("abc", 10000))))
				return [][]byte{b[:len(b)/2]}
			},
			wantErr: ErrTruncated,
		},
		{
			name: "corrupt-gzip",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				b := gz(t, mkTar(t, file("a", strings.Repeat("abcdefgh", 10000))))
				for i := 30; i < 60; i++ {
					b[i] ^= 0x5a
				}
				return [][]byte{b}
			},
			wantErr: ErrCorrupt,
		},
		{
			name: "corrupt-header-checksum",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				b := mkTar(t, file("a", "a"), file("b", "b"))
				b[1024+10] ^= 1 // inside b's name
				return [][]byte{b}
			},
			wantErr: ErrCorrupt,
		},
		{name: "empty-input", layers: raw(nil), wantErr: ErrTruncated},
		{name: "bzip2", layers: raw([]byte("BZh91AY&SY....")), wantErr: ErrUnsupportedCompression},
		{
			name: "entries-after-end-of-archive-ignored",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{append(mkTar(t, file("a", "a")), mkTar(t, file("hidden", "h"))...)}
			},
			check: func(t *testing.T, s *sandbox, _ Result) {
				mustNotExist(t, filepath.Join(s.root, "hidden"))
			},
		},

		// --- devices -------------------------------------------------------
		{
			name:   "devices-skipped-by-default",
			layers: one(dir("dev"), node("dev/sda", tar.TypeBlock, 8, 0), node("dev/mem", tar.TypeChar, 1, 1), node("fifo", tar.TypeFifo, 0, 0)),
			check: func(t *testing.T, s *sandbox, res Result) {
				mustNotExist(t, filepath.Join(s.root, "dev/sda"))
				mustNotExist(t, filepath.Join(s.root, "dev/mem"))
				mustNotExist(t, filepath.Join(s.root, "fifo"))
				if len(res.Skipped) != 3 {
					t.Errorf("skipped = %v", res.Skipped)
				}
			},
		},
		{
			name:   "fifo-allowed",
			layers: one(node("fifo", tar.TypeFifo, 0, 0).mode(0o640)),
			opts:   Options{AllowDevices: true},
			check: func(t *testing.T, s *sandbox, _ Result) {
				fi, err := os.Lstat(filepath.Join(s.root, "fifo"))
				if err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o640 {
					t.Errorf("fifo: %v %v", fi, err)
				}
			},
		},
		{
			name:    "rootfs-prefix-then-outside",
			layers:  one(dir("rootfs/"), file("rootfs/a", "a"), file("b", "b")),
			wantErr: ErrInvalidName, wantMsg: []string{"b (outside the rootfs/"},
		},
	}
}

// staticKinds are errors Validate must find too: they need no filesystem.
var staticKinds = []error{ErrPathTraversal, ErrInvalidName, ErrHardlinkEscape, ErrSymlinkEscape, ErrInvalidWhiteout,
	ErrFileTooLarge, ErrTooManyEntries, ErrArchiveTooLarge, ErrTruncated, ErrCorrupt, ErrUnsupportedCompression}

func TestHostileArchives(t *testing.T) {
	for _, resolver := range []string{"openat2", "walk"} {
		t.Run(resolver, func(t *testing.T) {
			for _, tc := range hostileCases() {
				t.Run(tc.name, func(t *testing.T) {
					runHostile(t, tc, resolver == "walk")
				})
			}
		})
	}
}

func runHostile(t *testing.T, tc hostileCase, walk bool) {
	if walk && strings.HasPrefix(tc.name, "deep-nesting") && testing.Short() {
		t.Skip("slow in the userspace walk")
	}
	s := newSandbox(t)
	if tc.pre != nil {
		tc.pre(t, s)
	}
	before := s.snapshot(t)
	layers := tc.layers(t, s)
	opts := tc.opts
	opts.forceWalk = walk
	var warnings []string
	opts.Warn = func(m string) { warnings = append(warnings, m) }
	var res Result
	var err error
	for i, l := range layers {
		res, err = extractBytes(context.Background(), l, s.root, opts)
		if i < len(layers)-1 && err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	s.assertUnchanged(t, before)
	switch {
	case tc.wantErr != nil:
		if !errors.Is(err, tc.wantErr) {
			t.Fatalf("err = %v, want %v", err, tc.wantErr)
		}
	case tc.wantAnyErr:
		if err == nil {
			t.Fatalf("expected an error")
		}
	case err != nil:
		t.Fatalf("unexpected error: %v (warnings %q)", err, warnings)
	}
	if err != nil {
		for _, m := range tc.wantMsg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("error %q does not contain %q", err, m)
			}
		}
		t.Logf("error: %v", err)
	}
	if tc.check != nil && err == nil {
		tc.check(t, s, res)
	}

	// Validate must reach the same verdict on everything that needs no
	// filesystem to decide.
	if len(layers) == 1 && tc.pre == nil && !walk {
		vopts := tc.opts
		_, verr := Validate(context.Background(), bytes.NewReader(layers[0]), vopts)
		for _, k := range staticKinds {
			if errors.Is(err, k) && !errors.Is(verr, k) {
				t.Errorf("Validate: err = %v, want %v", verr, k)
			}
		}
		if err == nil && verr != nil {
			t.Errorf("Validate failed where Extract succeeded: %v", verr)
		}
	}
}

// Guard against the sandbox itself being wrong: an extraction that does
// write outside must be caught by assertUnchanged.
func TestSandboxDetectsEscape(t *testing.T) {
	s := newSandbox(t)
	before := s.snapshot(t)
	if err := os.WriteFile(filepath.Join(s.sentinel, "secret"), []byte("changed"), 0o600); err != nil {
		t.Fatal(err)
	}
	ft := &fakeT{TB: t}
	s.assertUnchanged(ft, before)
	if !ft.failed {
		t.Fatal("snapshot did not notice a changed sentinel file")
	}
}

type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Helper()               {}

var _ = io.EOF
var _ = syscall.Getuid
