package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
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

// rawFile is a one-file ustar archive with the name in the first bytes
// (archive/tar's writer would move a non-ASCII name to a PAX header).
func rawFile(name, body string) func(*testing.T, *sandbox) [][]byte {
	return raw(rawHeader(name, '0', int64(len(body)), ""), pad([]byte(body)), endOfArchive())
}

// sparsePAX is a PAX 1.0 sparse entry (what `tar --sparse` writes with
// --format=posix) of logical size size, with head at offset 0 and tail
// ending at size, and nothing stored in between.
func sparsePAX(name string, size int64, head, tail string) []byte {
	m := fmt.Sprintf("2\n0\n%d\n%d\n%d\n", len(head), size-int64(len(tail)), len(tail))
	body := string(pad([]byte(m))) + head + tail
	return rawPAX(map[string]string{
		"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
		"GNU.sparse.name": name, "GNU.sparse.realsize": fmt.Sprint(size),
	}, "GNUSparseFile.0/"+name, '0', "", body)
}

// sparseGNU is the same as an old GNU 'S' header with an inline map.
func sparseGNU(name string, size int64, head, tail string) []byte {
	b := rawHeader(name, 'S', int64(len(head)+len(tail)), "")
	copy(b[257:265], "ustar  \x00") // GNU magic
	num := func(off int, v int64) { copy(b[off:off+12], fmt.Sprintf("%011o\x00", v)) }
	num(386, 0)                     // sparse[0].offset
	num(398, int64(len(head)))      // sparse[0].numbytes
	num(410, size-int64(len(tail))) // sparse[1].offset
	num(422, int64(len(tail)))      // sparse[1].numbytes
	num(483, size)                  // realsize
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return append(b, pad([]byte(head+tail))...)
}

func checkSparse(name string, size int64, head, tail string) func(*testing.T, *sandbox, Result) {
	return func(t *testing.T, s *sandbox, _ Result) {
		p := filepath.Join(s.root, name)
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != size {
			t.Errorf("size %d, want %d", st.Size, size)
		}
		if used := st.Blocks * 512; used > 1<<20 {
			t.Errorf("%s allocates %d bytes for %d of data: holes written out", name, used, len(head)+len(tail))
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got := make([]byte, len(head))
		f.ReadAt(got, 0)
		if string(got) != head {
			t.Errorf("head %q", got)
		}
		got = make([]byte, len(tail))
		f.ReadAt(got, size-int64(len(tail)))
		if string(got) != tail {
			t.Errorf("tail %q", got)
		}
	}
}

func fileIs(name, body string) func(*testing.T, *sandbox, Result) {
	return func(t *testing.T, s *sandbox, res Result) {
		if got := readFile(t, filepath.Join(s.root, name)); got != body {
			t.Errorf("%q = %q", name, got)
		}
		if res.Compression != string(Uncompressed) {
			t.Errorf("compression %q", res.Compression)
		}
	}
}

func deepName(levels int, leaf string) string {
	return strings.Repeat("d/", levels) + leaf
}

var layer = Options{Mode: Layer}

// t0 builds fixed archives outside a test (mkTar only fails on bugs).
var t0 = &testing.T{}

func hostileCases() []hostileCase {
	return append([]hostileCase{
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
			opts:   layer, // a rootfs keeps a non-empty directory (replaceCases)
			layers: one(dir("x"), dir("x/sub"), file("x/sub/y", "y"), file("x", "now a file")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "x")); got != "now a file" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name:   "dir-then-symlink-then-file-under",
			opts:   layer, // a rootfs keeps a non-empty directory (replaceCases)
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
			wantErr: ErrFileTooLarge, wantMsg: []string{"file too large: big.img: 2147483648 bytes = 2 GiB (max 1073741824 bytes = 1 GiB)"},
		},
		{
			// Issue 11 item 7: one byte over used to print "1GB (max 1GB)".
			name: "file-one-byte-over-the-limit",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{rawHeader("big.img", '0', 1<<30+1, "")}
			},
			wantErr: ErrFileTooLarge, wantMsg: []string{"file too large: big.img: 1073741825 bytes (max 1073741824 bytes = 1 GiB)"},
		},
		{
			name: "gzip-bomb-file",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				return [][]byte{gz(t, mkTar(t, ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Size: 64 << 20, Mode: 0o644}, body: make([]byte, 64<<20)}))}
			},
			opts:    Options{MaxFileSize: 1 << 20},
			wantErr: ErrFileTooLarge, wantMsg: []string{"bomb: 67108864 bytes = 64 MiB (max 1048576 bytes = 1 MiB)"},
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

		// --- parents (issue 11 item 1: Validate passed these) -------------
		{name: "entry-under-regular-file", layers: one(file("f", "x"), file("f/x", "y")), wantErr: ErrInvalidParent, wantMsg: []string{"f/x (a component of its directory is not a directory)"}},
		{name: "entry-under-fifo", layers: one(node("p", tar.TypeFifo, 0, 0), dir("p/d/")), wantErr: ErrInvalidParent},
		{name: "entry-under-dangling-symlink", layers: one(symlink("l", "nowhere/deeper"), file("l/x", "y")), wantErr: ErrInvalidParent, wantMsg: []string{"l/x (a symlink in its directory leads nowhere)"}},
		{name: "entry-under-symlink-to-file", layers: one(file("f", "x"), symlink("l", "f"), file("l/x", "y")), wantErr: ErrInvalidParent},
		{name: "entry-under-looping-symlink", layers: one(symlink("a", "b/x"), symlink("b", "a/y"), dir("a/z/")), wantErr: ErrInvalidParent, wantMsg: []string{"a/z/ (a symlink loop"}},
		{name: "entry-under-self-symlink", layers: one(symlink("s", "s"), file("s/x", "y")), wantErr: ErrInvalidParent},
		{
			name:    "hardlink-into-replaced-directory",
			opts:    layer, // a rootfs keeps a non-empty directory (replaceCases)
			layers:  one(dir("d"), file("d/a", "a"), file("d", "now a file"), dir("d"), hardlink("h", "d/a")),
			wantErr: ErrInvalidHardlink, wantMsg: []string{"h -> d/a (target not found)"},
		},
		{
			name:    "entry-under-directory-replaced-by-file",
			opts:    layer, // a rootfs keeps a non-empty directory (replaceCases)
			layers:  one(dir("d"), dir("d/sub"), file("d", "now a file"), file("d/sub/x", "x")),
			wantErr: ErrInvalidParent,
		},
		{
			name:   "entry-under-symlink-in-replaced-directory",
			opts:   layer, // a rootfs keeps a non-empty directory (replaceCases)
			layers: one(dir("d"), symlink("d/s", "/nowhere"), file("d", "f"), dir("d"), file("d/s/x", "x")),
			check:  fileIs("d/s/x", "x"),
		},
		{
			// GNU tar reads a regular file named "x/" as a directory.
			name:   "type0-trailing-slash-is-a-directory",
			layers: raw(rawHeader("d/", '0', 0, ""), rawHeader("d/x", '0', 1, ""), pad([]byte("x")), endOfArchive()),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "d/x")); got != "x" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name:   "type0-trailing-slash-rootfs-is-the-prefix",
			layers: raw(rawHeader("rootfs/", '0', 0, ""), rawHeader("rootfs/x", '0', 1, ""), pad([]byte("x")), endOfArchive()),
			check:  fileIs("x", "x"),
		},
		{
			name:    "type0-trailing-slash-with-data",
			layers:  raw(rawHeader("d/", '0', 3, ""), pad([]byte("abc")), endOfArchive()),
			wantErr: ErrInvalidName, wantMsg: []string{"d/ (a regular file with 3 bytes of data, named like a directory)"},
		},
		{
			// Implied parents count as entries: a few bytes of name
			// must not make thousands of directories past MaxEntries.
			name:    "implied-parents-count-as-entries",
			layers:  one(file(deepName(50, "f"), "x")),
			opts:    Options{MaxEntries: 20},
			wantErr: ErrTooManyEntries, wantMsg: []string{"counting 50 directories made for parents"},
		},
		{
			name: "symlink-targets-total-bounded",
			layers: func(t *testing.T, s *sandbox) [][]byte {
				long := strings.Repeat("t/", 2000)
				one := mkTar(t, symlink("l", long))
				one = one[:len(one)-1024] // without the end marker
				n := maxSymlinkTargets/len(long) + 1
				return [][]byte{gz(t, append(bytes.Repeat(one, n), endOfArchive()...))}
			},
			wantErr: ErrArchiveTooLarge, wantMsg: []string{"symlink targets total more than 67108864 bytes = 64 MiB"},
		},

		{
			// Issue 11 item 2: 20,000 components per lookup.
			name:   "deep-20000-components-through-symlinks",
			layers: func(t *testing.T, _ *sandbox) [][]byte { return [][]byte{deepThroughSymlinks(t, 20)} },
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, deepName(2000, "f19"))); got != "x" {
					t.Errorf("got %q", got)
				}
			},
		},
		{name: "deep-chain-500", layers: func(t *testing.T, _ *sandbox) [][]byte { return [][]byte{deepChain(t, 500)} }},

		// --- PAX global headers (issue 11 item 4) -------------------------
		{
			// `git archive --prefix=rootfs/` starts with one.
			name:   "pax-global-first-rootfs-stripped",
			layers: one(globalHeader(map[string]string{"comment": "0123abcd"}), dir("rootfs/"), file("rootfs/etc/x", "x")),
			check: func(t *testing.T, s *sandbox, res Result) {
				if got := readFile(t, filepath.Join(s.root, "etc/x")); got != "x" {
					t.Errorf("got %q", got)
				}
				mustNotExist(t, filepath.Join(s.root, "rootfs"))
				mustNotExist(t, filepath.Join(s.root, "pax_global_header"))
				if res.StrippedPrefix != "rootfs/" {
					t.Errorf("StrippedPrefix = %q", res.StrippedPrefix)
				}
			},
		},
		{
			name:   "pax-global-in-the-middle-of-rootfs",
			layers: one(dir("rootfs/"), file("rootfs/a", "a"), globalHeader(map[string]string{"comment": "x"}), file("rootfs/b", "b")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				if got := readFile(t, filepath.Join(s.root, "b")); got != "b" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name: "pax-global-records-apply-to-later-entries",
			layers: one(file("before", "x"), globalHeader(map[string]string{"mtime": "1000000000.5", "uid": "4242"}),
				file("after", "x"), file("own", "x").owner(7, 0).pax("uid", "7")),
			check: func(t *testing.T, s *sandbox, _ Result) {
				fi, err := os.Lstat(filepath.Join(s.root, "after"))
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.ModTime().UnixNano(); got != 1000000000_500000000 {
					t.Errorf("after: mtime %d, want the global one", got)
				}
				if isRoot() {
					if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 4242 {
						t.Errorf("after: uid %d, want the global 4242", uid)
					}
					fi, _ = os.Lstat(filepath.Join(s.root, "own"))
					if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 7 {
						t.Errorf("own: uid %d, want its own 7", uid)
					}
				}
				fi, _ = os.Lstat(filepath.Join(s.root, "before"))
				if !fi.ModTime().Equal(testTime) {
					t.Errorf("before: mtime %v changed by a later global header", fi.ModTime())
				}
			},
		},
		{
			name:    "pax-global-uid-out-of-range",
			layers:  one(globalHeader(map[string]string{"uid": "4294967296"}), file("su", "x").mode(0o4755)),
			wantErr: ErrOutOfRange, wantMsg: []string{"su: uid 4294967296"},
		},

		// --- sparse files (issue 11 item 6) ------------------------------
		{
			// A few KB of archive, 256 MiB of logical file: the holes
			// must stay holes.
			name:   "sparse-pax-1.0-keeps-holes",
			layers: raw(sparsePAX("sparse.img", 256<<20, "head", "tail"), endOfArchive()),
			check:  checkSparse("sparse.img", 256<<20, "head", "tail"),
		},
		{
			name:   "sparse-gnu-old-keeps-holes",
			layers: raw(sparseGNU("old.img", 256<<20, "head", "tail"), endOfArchive()),
			check:  checkSparse("old.img", 256<<20, "head", "tail"),
		},
		{
			// The logical size is what counts against the limits.
			name:    "sparse-logical-size-over-limit",
			layers:  raw(sparsePAX("sparse.img", 2<<20, "head", "tail"), endOfArchive()),
			opts:    Options{MaxFileSize: 1 << 20},
			wantErr: ErrFileTooLarge, wantMsg: []string{"sparse.img: 2097152 bytes = 2 MiB (max 1048576 bytes = 1 MiB)"},
		},
		{
			name:    "sparse-logical-total-over-limit",
			layers:  raw(sparsePAX("a.img", 3<<20, "a", "a"), sparsePAX("b.img", 3<<20, "b", "b"), endOfArchive()),
			opts:    Options{MaxTotalSize: 4 << 20},
			wantErr: ErrArchiveTooLarge, wantMsg: []string{"b.img"},
		},

		// --- format detection (issue 11 item 11) -------------------------
		// Plain tars whose first bytes, the first entry's name, are as
		// much of a compression magic as a name can hold.
		{name: "tar-named-like-gzip", layers: rawFile("\x1f\x8b\x08gz", "x"), check: fileIs("\x1f\x8b\x08gz", "x")},
		{name: "tar-named-like-zstd", layers: rawFile("\x28\xb5\x2f\xfdzst", "x"), check: fileIs("\x28\xb5\x2f\xfdzst", "x")},
		{name: "tar-named-like-zstd-skippable", layers: rawFile("\x50\x2a\x4d\x18skip", "x"), check: fileIs("\x50\x2a\x4d\x18skip", "x")},
		{name: "tar-named-like-xz", layers: rawFile("\xfd7zXZ", "x"), check: fileIs("\xfd7zXZ", "x")},
		{name: "tar-named-like-bzip2", layers: rawFile("BZh91AY&SY", "x"), check: fileIs("BZh91AY&SY", "x")},

		// --- ids (issue 11 item 5) ---------------------------------------
		{
			// uid 2^32 was truncated to 0: a setuid-root file.
			name:    "uid-2pow32-setuid",
			layers:  raw(rawPAXFile(map[string]string{"uid": "4294967296"}, "bin/su", "x"), endOfArchive()),
			wantErr: ErrOutOfRange, wantMsg: []string{"bin/su: uid 4294967296 (allowed 0..4294967294)"},
		},
		{name: "gid-2pow32", layers: one(file("g", "x").owner(0, 1<<32).format(tar.FormatPAX)), wantErr: ErrOutOfRange, wantMsg: []string{"g: gid 4294967296"}},
		{
			// 2^32-1 is chown's "leave unchanged": the file would stay root's.
			name:    "uid-minus-one-as-unsigned",
			layers:  raw(rawPAXFile(map[string]string{"uid": "4294967295"}, "bin/su", "x"), endOfArchive()),
			wantErr: ErrOutOfRange, wantMsg: []string{"uid 4294967295"},
		},
		{name: "uid-negative", layers: raw(rawPAXFile(map[string]string{"uid": "-1"}, "neg", "x"), endOfArchive()), wantErr: ErrOutOfRange},
		{name: "uid-gnu-base256-huge", layers: one(file("huge", "x").owner(1<<40, 0).format(tar.FormatGNU)), wantErr: ErrOutOfRange, wantMsg: []string{"huge: uid 1099511627776"}},
		{name: "uid-largest-ok", layers: one(file("ok", "x").owner(1<<32-2, 1<<32-2).format(tar.FormatPAX))},
		{
			// mknod gets 12 bits of major: 4097 would become 1 (/dev/mem).
			name:    "device-major-truncated",
			layers:  one(node("mem", tar.TypeChar, 4097, 1)),
			opts:    Options{AllowDevices: true},
			wantErr: ErrOutOfRange, wantMsg: []string{"mem: device major 4097"},
		},
		{name: "device-minor-truncated", layers: one(node("m", tar.TypeBlock, 8, 1<<20)), opts: Options{AllowDevices: true}, wantErr: ErrOutOfRange},

		// --- devices -------------------------------------------------------
		{
			name:   "devices-skipped-by-default",
			layers: one(dir("dev"), node("dev/sda", tar.TypeBlock, 8, 0), node("dev/mem", tar.TypeChar, 1, 1), node("fifo", tar.TypeFifo, 0, 0)),
			check: func(t *testing.T, s *sandbox, res Result) {
				mustNotExist(t, filepath.Join(s.root, "dev/sda"))
				mustNotExist(t, filepath.Join(s.root, "dev/mem"))
				if len(res.Skipped) != 2 {
					t.Errorf("skipped = %v", res.Skipped)
				}
			},
		},
		{
			// Issue 11 item 11: FIFOs are harmless and in real images.
			name:   "fifo-created-by-default",
			layers: one(dir("run"), node("run/initctl", tar.TypeFifo, 0, 0).mode(0o600)),
			check: func(t *testing.T, s *sandbox, res Result) {
				fi, err := os.Lstat(filepath.Join(s.root, "run/initctl"))
				if err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o600 {
					t.Errorf("fifo: %v %v", fi, err)
				}
				if len(res.Skipped) != 0 {
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
	}, reviewCases()...)
}

// staticKinds are errors Validate must find too: they need no filesystem.
var staticKinds = []error{ErrOutOfRange, ErrPathTraversal, ErrInvalidName, ErrHardlinkEscape, ErrSymlinkEscape, ErrInvalidWhiteout,
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
