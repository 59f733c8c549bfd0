package stagedir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// TestCommitNeverReplacesAPlantedDest: a destination that was new when
// the stage was made, and that someone made between then and Commit (an
// empty directory, which rename(2) would silently replace), is left as
// it is; the tree stays in the staging directory and the error says so.
func TestCommitNeverReplacesAPlantedDest(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")
	s, err := New(dest)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir(), "tree"), []byte("x"), 0o644)
	if err := os.Mkdir(dest, 0o700); err != nil {
		t.Fatal(err)
	}
	planted := mustStat(t, dest)
	err = s.Commit()
	if err == nil || !strings.Contains(err.Error(), "it is left in "+s.Dir()) {
		t.Fatalf("Commit over a planted directory: %v", err)
	}
	if now := mustStat(t, dest); !os.SameFile(now, planted) {
		t.Errorf("the planted %s was replaced", dest)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "tree")); err != nil {
		t.Errorf("the staged tree: %v", err)
	}
}

// TestCommitReplacesOnlyTheDestItChecked: an empty destination is
// replaced, but only the very directory New found empty: one put in its
// place since (empty or not), or filled since, is kept and Commit fails.
func TestCommitReplacesOnlyTheDestItChecked(t *testing.T) {
	for _, change := range []string{"none", "swapped", "filled"} {
		t.Run(change, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "dest")
			os.Mkdir(dest, 0o755)
			s, err := New(dest)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(s.Dir(), "tree"), []byte("x"), 0o644)
			switch change {
			case "swapped":
				os.Remove(dest)
				os.Mkdir(dest, 0o700)
			case "filled":
				os.WriteFile(filepath.Join(dest, "keep"), []byte("k"), 0o644)
			}
			before := mustStat(t, dest)
			err = s.Commit()
			if change == "none" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(dest, "tree")); err != nil {
					t.Errorf("tree not at dest: %v", err)
				}
				if ents, _ := os.ReadDir(filepath.Dir(dest)); len(ents) != 1 {
					t.Errorf("left beside dest: %v", ents)
				}
				return
			}
			if err == nil {
				t.Fatalf("Commit over a %s destination succeeded", change)
			}
			if now := mustStat(t, dest); !os.SameFile(now, before) {
				t.Errorf("the %s %s was replaced", change, dest)
			}
			if change == "filled" {
				if _, err := os.Stat(filepath.Join(dest, "keep")); err != nil {
					t.Errorf("what dest held: %v", err)
				}
			}
			if _, err := os.Stat(filepath.Join(s.Dir(), "tree")); err != nil {
				t.Errorf("the staged tree: %v (err %v)", err, err)
			}
		})
	}
}
