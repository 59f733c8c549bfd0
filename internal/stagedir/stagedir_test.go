package stagedir

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestAbortNeverFollows: symlinks the tree holds (an archive's) are
// removed on Abort, never followed, whether the tree was staged beside
// its destination or built in place.
func TestAbortNeverFollows(t *testing.T) {
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	for _, inPlace := range []bool{false, true} {
		dest := filepath.Join(parent, "dest")
		s, err := New(dest)
		if err != nil {
			t.Fatal(err)
		}
		if inPlace {
			// As for a mount point, which the test cannot make.
			os.Remove(s.Dir())
			os.Mkdir(dest, 0o755)
			s = &Stage{dest: dest, dir: dest, inPlace: true, old: mustStat(t, dest)}
		}
		os.Symlink(outside, filepath.Join(s.Dir(), "link"))
		os.Mkdir(filepath.Join(s.Dir(), "lost+found"), 0o700)
		os.Symlink(outside, filepath.Join(s.Dir(), "lost+found", "link"))
		if err := s.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("in place %v: the symlink's target: %v", inPlace, err)
		}
		ents, _ := os.ReadDir(parent)
		if inPlace {
			if left, _ := os.ReadDir(dest); len(left) != 1 || left[0].Name() != "lost+found" {
				t.Errorf("%s after Abort: %v", dest, left)
			}
			if left, _ := os.ReadDir(filepath.Join(dest, "lost+found")); len(left) != 0 {
				t.Errorf("lost+found after Abort: %v", left)
			}
			os.RemoveAll(dest)
		} else if len(ents) != 0 {
			t.Errorf("%s after Abort: %v", parent, ents)
		}
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// TestNewRefuses a file, and a directory that holds something.
func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, nil, 0o600)
	if _, err := New(f); err == nil {
		t.Error("New accepted a regular file")
	}
	// lost+found counts only on a filesystem's root.
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	os.Mkdir(filepath.Join(dir, "d", "lost+found"), 0o700)
	if _, err := New(filepath.Join(dir, "d")); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("New on a directory holding lost+found: %v", err)
	}
}
