package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCommit installs the file only when complete, and a file swapped in
// under the temporary name is neither installed nor removed.
func TestCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out")
	f, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("data")
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists before Commit: %v", path, err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort() // a no-op after Commit
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Errorf("%s: %q, %v", path, b, err)
	}

	g, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(g.Name())
	os.Symlink("/etc/hostname", g.Name())
	if err := g.Commit(); err == nil {
		t.Error("Commit installed a file swapped in under its temporary name")
	}
	if got, err := os.Readlink(g.Name()); err != nil || got != "/etc/hostname" {
		t.Errorf("the swapped-in link: %q, %v", got, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Errorf("%s after the refused Commit: %q", path, b)
	}
}
