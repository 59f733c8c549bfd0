package fillmount

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// TestSetupUnmountsLeftovers leaves mounts (one stacked inside another)
// under the mount directory, as a killed daemon does, and checks that
// Setup unmounts them all, removes the empty mount points, keeps a
// non-empty directory, and makes the directory private.
func TestSetupUnmountsLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount tmpfs")
	}
	dir := Dir(t.TempDir())
	outer, inner := filepath.Join(dir, "fill-1"), filepath.Join(dir, "fill-1", "sub")
	if err := os.MkdirAll(outer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", outer, "tmpfs", 0, ""); err != nil {
		t.Skipf("cannot mount tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(inner, unix.MNT_DETACH); unix.Unmount(outer, unix.MNT_DETACH) })
	os.Mkdir(inner, 0o755)
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	kept := filepath.Join(dir, "not-a-mount")
	os.MkdirAll(kept, 0o755)
	os.WriteFile(filepath.Join(kept, "file"), []byte("x"), 0o644)
	stray := filepath.Join(dir, "stray-file")
	os.WriteFile(stray, []byte("x"), 0o644)

	unmounted, err := Setup(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(unmounted) != 2 || unmounted[0] != inner {
		t.Errorf("unmounted %q, want %q then %q", unmounted, inner, outer)
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(ms) != 0 {
		t.Errorf("still mounted: %+v", ms[0])
	}
	if _, err := os.Stat(outer); !os.IsNotExist(err) {
		t.Errorf("empty mount point %s left: %v", outer, err)
	}
	if _, err := os.Stat(filepath.Join(kept, "file")); err != nil {
		t.Errorf("a directory with files was removed: %v", err)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("a file in the mount directory was removed: %v", err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("mount directory mode %v, want 0700", st.Mode().Perm())
	}
}
