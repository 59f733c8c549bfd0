package extract

import (
	"archive/tar"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func lstat(t *testing.T, p string) fs.FileInfo {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// replaceCases: a non-directory entry (file, hardlink, symlink, FIFO)
// whose name is an existing directory. In a rootfs, as GNU tar 1.34 does
// (checked with these archives, `tar -xf`: "d: Cannot open: File
// exists", "Cannot hard link to 't': File exists", "Cannot create
// symlink to 'x': File exists", "Cannot mkfifo: File exists"), an empty
// directory is removed and a non-empty one is refused. In a layer, the
// directory goes with its contents, as OCI layers need (and containerd's
// applier does); a hardlink whose target is inside it is refused by both,
// where Extract removed the target before linking to it ("link d: no
// such file or directory") and Validate passed.
func replaceCases() []hostileCase {
	notEmpty := []string{"d (replaces a non-empty directory)"}
	isFile := func(name string) func(*testing.T, *sandbox, Result) {
		return func(t *testing.T, s *sandbox, _ Result) {
			fi := lstat(t, filepath.Join(s.root, name))
			if !fi.Mode().IsRegular() {
				t.Errorf("%s is %v, want a file", name, fi.Mode())
			}
		}
	}
	return []hostileCase{
		// --- rootfs: as GNU tar ------------------------------------
		{name: "file-over-empty-dir", layers: one(dir("d/"), file("d", "f")), check: fileIs("d", "f")},
		{name: "hardlink-over-empty-dir", layers: one(file("t", "t"), dir("d/"), hardlink("d", "t")), check: fileIs("d", "t")},
		{name: "symlink-over-empty-dir", layers: one(dir("d/"), symlink("d", "x")), check: func(t *testing.T, s *sandbox, _ Result) {
			if fi := lstat(t, filepath.Join(s.root, "d")); fi.Mode().Type() != fs.ModeSymlink {
				t.Errorf("d is %v, want a symlink", fi.Mode())
			}
		}},
		{name: "file-over-full-dir", layers: one(dir("d/"), file("d/a", "a"), file("d", "f")), wantErr: ErrInvalidName, wantMsg: notEmpty},
		{name: "file-over-dir-with-an-empty-subdir", layers: one(dir("d/"), dir("d/e/"), file("d", "f")), wantErr: ErrInvalidName, wantMsg: notEmpty},
		{name: "file-over-dir-with-an-implied-parent", layers: one(file("d/e/f", "f"), file("d", "f")), wantErr: ErrInvalidName, wantMsg: notEmpty},
		{name: "hardlink-over-full-dir", layers: one(file("t", "t"), dir("d/"), file("d/a", "a"), hardlink("d", "t")), wantErr: ErrInvalidName, wantMsg: notEmpty},
		{name: "hardlink-over-dir-to-inside", layers: one(dir("d/"), file("d/a", "a"), hardlink("d", "d/a")), wantErr: ErrInvalidName, wantMsg: notEmpty},
		{name: "symlink-over-full-dir", layers: one(dir("d/"), file("d/a", "a"), symlink("d", "x")), wantErr: ErrInvalidName, wantMsg: notEmpty},
		{name: "fifo-over-full-dir", layers: one(dir("d/"), file("d/a", "a"), node("d", tar.TypeFifo, 0, 0)), wantErr: ErrInvalidName, wantMsg: notEmpty},
		{name: "full-dir-through-a-symlink", layers: one(dir("d/"), file("d/a", "a"), symlink("l", "."), file("l/d", "f")), wantErr: ErrInvalidName, wantMsg: []string{"l/d (replaces a non-empty directory)"}},
		{
			// A directory over a file, then a file over that directory,
			// still empty.
			name: "dir-over-file-then-file-over-it", layers: one(file("d", "f"), dir("d/"), file("d", "g")), check: fileIs("d", "g"),
		},

		// --- layers: as OCI ---------------------------------------
		{name: "layer-file-over-full-dir", opts: layer, layers: one(dir("d/"), file("d/a", "a"), file("d", "f")), check: isFile("d")},
		{name: "layer-hardlink-over-full-dir", opts: layer, layers: one(file("t", "t"), dir("d/"), file("d/a", "a"), hardlink("d", "t")), check: fileIs("d", "t")},
		{
			name: "layer-hardlink-over-dir-to-inside", opts: layer, layers: one(dir("d/"), file("d/a", "a"), hardlink("d", "d/a")),
			wantErr: ErrInvalidHardlink, wantMsg: []string{"d -> d/a (target inside the directory it replaces)"},
		},
		{
			name: "layer-hardlink-over-dir-to-deep-inside", opts: layer, layers: one(dir("d/e/f/"), file("d/e/f/a", "a"), hardlink("d", "d/e/f/a")),
			wantErr: ErrInvalidHardlink, wantMsg: []string{"(target inside the directory it replaces)"},
		},
		{
			name: "layer-hardlink-over-dir-to-inside-through-a-symlink", opts: layer, layers: one(dir("d/e/"), file("d/e/a", "a"), symlink("l", "d/e"), hardlink("d", "l/a")),
			wantErr: ErrInvalidHardlink, wantMsg: []string{"(target inside the directory it replaces)"},
		},
		{
			// A symlink inside the directory leading out of it: the
			// target is elsewhere and stays.
			name: "layer-hardlink-over-dir-through-a-symlink-in-it", opts: layer,
			layers: one(dir("o/"), file("o/a", "a"), dir("d/"), symlink("d/out", "/o"), hardlink("d", "d/out/a")),
			check:  fileIs("d", "a"),
		},
		{
			name: "layer-hardlink-over-a-sibling-dir", opts: layer, layers: one(dir("d/"), dir("d2/"), file("d2/a", "a"), hardlink("d", "d2/a")),
			check: fileIs("d", "a"),
		},
	}
}
