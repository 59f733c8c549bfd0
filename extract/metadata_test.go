package extract

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func TestMetadataKept(t *testing.T) {
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	archive := mkTar(t,
		dir("bin").mode(0o755).owner(0, 0).mtime(old),
		file("bin/su", "su").mode(0o4755).owner(0, 0),
		file("bin/wall", "wall").mode(0o2755).owner(0, 5),
		file("bin/mine", "x").mode(0o640).owner(1234, 5678),
		dir("tmp").mode(0o1777).mtime(old),
		dir("shared").mode(0o2775).owner(1000, 1000),
		file("shared/a", "a"),
		dir("ro").mode(0o555).mtime(old),
		file("ro/f", "f").mode(0o444),
		symlink("bin/sh", "busybox").owner(1234, 5678).mtime(old),
		file("bin/busybox", "bb").mode(0o755),
		hardlink("bin/ls", "bin/busybox"),
		file("bin/ping", "ping").mode(0o755).pax("SCHILY.xattr.security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		file("xattr", "x").pax("SCHILY.xattr.user.comment", "hello").pax("SCHILY.xattr.trusted.overlay.opaque", "y"),
	)
	s := newSandbox(t)
	var warnings []string
	res, err := Extract(context.Background(), strings.NewReader(string(archive)), s.root, Options{Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 14 {
		t.Errorf("entries = %d", res.Entries)
	}
	mode := func(p string) os.FileMode {
		fi, err := os.Lstat(filepath.Join(s.root, p))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	for p, want := range map[string]os.FileMode{
		"bin/su":   0o755 | os.ModeSetuid,
		"bin/mine": 0o640,
		"tmp":      os.ModeDir | 0o777 | os.ModeSticky,
		"ro":       os.ModeDir | 0o555,
		"ro/f":     0o444,
	} {
		if got := mode(p); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	if isRoot() {
		if got := mode("bin/wall"); got != 0o755|os.ModeSetgid {
			t.Errorf("bin/wall: mode %v", got)
		}
		if got := mode("shared"); got != os.ModeDir|0o775|os.ModeSetgid {
			t.Errorf("shared: mode %v", got)
		}
		if st := statT(t, filepath.Join(s.root, "bin/mine")); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("bin/mine owner %d:%d", st.Uid, st.Gid)
		}
		if st := statT(t, filepath.Join(s.root, "bin/wall")); st.Gid != 5 {
			t.Errorf("bin/wall group %d (chmod must follow chown)", st.Gid)
		}
		if st := statT(t, filepath.Join(s.root, "bin/sh")); st.Uid != 1234 {
			t.Errorf("symlink owner %d (lchown)", st.Uid)
		}
		buf := make([]byte, 64)
		if n, err := unix.Lgetxattr(filepath.Join(s.root, "bin/ping"), "security.capability", buf); err != nil || n != 20 {
			t.Errorf("security.capability: %d %v", n, err)
		}
	}
	// Times: directories after their contents.
	for _, p := range []string{"bin", "tmp", "ro", "bin/sh"} {
		fi, _ := os.Lstat(filepath.Join(s.root, p))
		if !fi.ModTime().Equal(old) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), old)
		}
	}
	if fi, _ := os.Lstat(filepath.Join(s.root, "bin/su")); !fi.ModTime().Equal(testTime) {
		t.Errorf("bin/su mtime %v", fi.ModTime())
	}
	// Hardlinks.
	a, b := statT(t, filepath.Join(s.root, "bin/ls")), statT(t, filepath.Join(s.root, "bin/busybox"))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("bin/ls not a hardlink of bin/busybox")
	}
	// xattrs: user.* kept, trusted.* refused.
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(s.root, "xattr"), "user.comment", buf); err != nil || string(buf[:n]) != "hello" {
		if !errors.Is(err, unix.ENOTSUP) {
			t.Errorf("user.comment: %q %v", buf[:n], err)
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(s.root, "xattr"), "trusted.overlay.opaque", buf); err == nil {
		t.Errorf("trusted.* xattr was written")
	}
	if !hasAll(strings.Join(warnings, "\n"), "trusted.overlay.opaque") {
		t.Errorf("no warning for trusted xattr: %q", warnings)
	}
}

func TestDevicesAsRoot(t *testing.T) {
	if !isRoot() {
		t.Skip("mknod of devices needs root")
	}
	s := newSandbox(t)
	archive := mkTar(t, dir("dev"), node("dev/null", tar.TypeChar, 1, 3).mode(0o666), node("dev/loopx", tar.TypeBlock, 7, 200).mode(0o660).owner(0, 6))
	if _, err := Extract(context.Background(), strings.NewReader(string(archive)), s.root, Options{AllowDevices: true}); err != nil {
		t.Fatal(err)
	}
	st := statT(t, filepath.Join(s.root, "dev/null"))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 || st.Mode&0o7777 != 0o666 {
		t.Errorf("dev/null: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	st = statT(t, filepath.Join(s.root, "dev/loopx"))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Minor(st.Rdev) != 200 || st.Gid != 6 || st.Mode&0o7777 != 0o660 {
		t.Errorf("dev/loopx: mode %o rdev %d gid %d", st.Mode, st.Rdev, st.Gid)
	}
}

func TestLayerReplacesParentTypes(t *testing.T) {
	s := newSandbox(t)
	writeIn(t, s.root, "etc/conf.d/a", "lower")
	writeIn(t, s.root, "usr/lib/x", "lower")
	if err := os.Symlink("usr/lib", filepath.Join(s.root, "lib")); err != nil {
		t.Fatal(err)
	}
	before := s.snapshot(t)
	layerTar := mkTar(t,
		file("etc/conf.d", "now a file"), // non-empty dir replaced by a file
		dir("lib"),                       // symlink replaced by a dir
		file("lib/y", "y"),
		file("usr/.wh.lib", ""),
	)
	if _, err := Extract(context.Background(), strings.NewReader(string(layerTar)), s.root, Options{Mode: Layer}); err != nil {
		t.Fatal(err)
	}
	s.assertUnchanged(t, before)
	if got := readFile(t, filepath.Join(s.root, "etc/conf.d")); got != "now a file" {
		t.Errorf("etc/conf.d = %q", got)
	}
	if fi, _ := os.Lstat(filepath.Join(s.root, "lib")); fi == nil || !fi.IsDir() {
		t.Errorf("lib should be a directory")
	}
	mustNotExist(t, filepath.Join(s.root, "usr/lib"))
	mustNotExist(t, filepath.Join(s.root, "usr/.wh.lib"))
}

func TestOpaqueKeepsThisLayersNestedWrites(t *testing.T) {
	s := newSandbox(t)
	writeIn(t, s.root, "opt/app/old", "lower")
	writeIn(t, s.root, "opt/app/sub/old", "lower")
	writeIn(t, s.root, "opt/other", "lower")
	layerTar := mkTar(t,
		dir("opt/app"),
		file("opt/app/sub/new", "upper"),
		file("opt/app/.wh..wh..opq", ""),
	)
	if _, err := Extract(context.Background(), strings.NewReader(string(layerTar)), s.root, Options{Mode: Layer}); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, filepath.Join(s.root, "opt/app/old"))
	mustNotExist(t, filepath.Join(s.root, "opt/app/sub/old"))
	if got := readFile(t, filepath.Join(s.root, "opt/app/sub/new")); got != "upper" {
		t.Errorf("got %q", got)
	}
	if got := readFile(t, filepath.Join(s.root, "opt/other")); got != "lower" {
		t.Errorf("opaque leaked to a sibling: %q", got)
	}
}
