package extract

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The disk sink keeps the fd of the last parent directory it resolved
// (parentCache). Each archive here makes an entry remove something on the
// way to that directory, under the same parent name, so that the next
// entry with that parent would be written in the wrong place (or into a
// removed directory) if the removal did not drop the cache. Extract and
// Validate must agree on each, and nothing outside the root may change.
func TestParentCacheDroppedOnRemoval(t *testing.T) {
	layer := Options{Mode: Layer}
	for _, tc := range []struct {
		name    string
		ents    []ent
		opts    Options
		wantErr error
		exist   []string
		absent  []string
	}{{
		// "a/a" resolves to the root through a -> "."; the file a/a/a
		// replaces that symlink, so a/a no longer resolves at all.
		name:    "file-replaces-symlink-on-the-way",
		ents:    []ent{symlink("a", "."), file("a/a/f", "1"), file("a/a/a", "2"), file("a/a/g", "3")},
		wantErr: ErrInvalidParent,
		exist:   []string{"f", "a"},
		absent:  []string{"g"},
	}, {
		// The same with a hardlink replacing the symlink.
		name:    "hardlink-replaces-symlink-on-the-way",
		ents:    []ent{symlink("a", "."), file("a/t", "1"), hardlink("a/a", "t"), file("a/g", "3")},
		wantErr: ErrInvalidParent,
		exist:   []string{"t", "a"},
		absent:  []string{"g"},
	}, {
		// "a" is first the root (a -> "."), then a directory of its
		// own: a/g must go into that directory.
		name:   "directory-replaces-symlink-on-the-way",
		ents:   []ent{symlink("a", "."), file("a/f", "1"), dir("a/a"), file("a/g", "3")},
		exist:  []string{"f", "a/g"},
		absent: []string{"g"},
	}, {
		// A whiteout removes the cached directory itself: the next
		// entry in it makes it again rather than writing into the
		// removed one.
		name:   "whiteout-removes-the-directory",
		ents:   []ent{dir("d"), file("d/f", "1"), file(".wh.d", ""), file("d/g", "2")},
		opts:   layer,
		exist:  []string{"d/g"},
		absent: []string{"d/f"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			b := mkTar(t, tc.ents...)
			s := newSandbox(t)
			before := s.snapshot(t)
			_, err := extractBytes(context.Background(), b, s.root, tc.opts)
			_, verr := Validate(context.Background(), bytes.NewReader(b), tc.opts)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Extract: got %v, want %v", err, tc.wantErr)
			}
			if verdict(err) != verdict(verr) {
				t.Errorf("Extract says %v, Validate says %v", err, verr)
			}
			for _, p := range tc.exist {
				if _, err := os.Lstat(filepath.Join(s.root, p)); err != nil {
					t.Errorf("%s: %v", p, err)
				}
			}
			for _, p := range tc.absent {
				mustNotExist(t, filepath.Join(s.root, p))
			}
			s.assertUnchanged(t, before)
		})
	}
}
