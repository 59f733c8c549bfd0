package importer

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRemoveMountPointRemovesOnlyEmptyUnmountedDirs: a leftover mount
// point is removed only when it is an empty directory nothing is
// mounted on. A file or a symlink at that path is never unlinked, a
// directory with content or a mount on it is kept whole.
func TestRemoveMountPointRemovesOnlyEmptyUnmountedDirs(t *testing.T) {
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	file := filepath.Join(root, "file")
	link := filepath.Join(root, "link")
	full := filepath.Join(root, "full")
	os.Mkdir(empty, 0o755)
	os.WriteFile(file, []byte("a user's file"), 0o644)
	os.Symlink(empty, link)
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "f"), []byte("x"), 0o644)

	if err := removeMountPoint(empty); err != nil {
		t.Errorf("empty dir: %v", err)
	}
	if _, err := os.Lstat(empty); !os.IsNotExist(err) {
		t.Errorf("empty unmounted dir kept: %v", err)
	}
	if err := removeMountPoint(filepath.Join(root, "gone")); err != nil {
		t.Errorf("missing path: %v", err)
	}
	for _, p := range []string{file, link, full} {
		if err := removeMountPoint(p); err == nil {
			t.Errorf("%s: removed without an error", p)
		}
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}

// TestRemoveMountPointKeepsAMountedDir: a directory something is
// mounted on is kept, with what is visible in it.
func TestRemoveMountPointKeepsAMountedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(dir, 0o755)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := removeMountPoint(dir); err == nil {
		t.Error("a mounted dir was removed without an error")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("mounted dir gone: %v", err)
	}
}
