package diag

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestWriteFilePlanted: the bundle's default name is predictable and it
// is often written to /tmp. A symlink planted there is replaced, not
// written through; a file another user made there (and could read) is
// replaced by ours, mode 0600.
func TestWriteFilePlanted(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o1777)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := []File{{Name: "version.txt", Data: []byte("v1\n")}}
	now := time.Unix(1700000000, 0)

	link := filepath.Join(dir, "flyio-image-manager-diag-a.tar.gz")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(link, files, now); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep" {
		t.Errorf("the symlink's target was written: %.40q, %v", b, err)
	}
	checkBundleFile(t, link)

	theirs := filepath.Join(dir, "flyio-image-manager-diag-b.tar.gz")
	if err := os.WriteFile(theirs, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		os.Chown(theirs, 65534, 65534)
	}
	if err := WriteFile(theirs, files, now); err != nil {
		t.Fatal(err)
	}
	checkBundleFile(t, theirs)
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%s holds %v, want the two bundles", dir, ents)
	}
}

func checkBundleFile(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a regular file of mode 0600", p, fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		t.Errorf("%s is owned by uid %d, not us", p, st.Uid)
	}
	if fi.Size() == 0 {
		t.Errorf("%s is empty", p)
	}
}
