package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// manifest describes a tree: for each path, what a correct extraction
// must agree on (type, mode, owner, link count, size, mtime, symlink target,
// content hash).
func manifest(root string) (map[string]string, int64, error) {
	out := map[string]string{}
	var bytes int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rec := fmt.Sprintf("%v uid=%d gid=%d nlink=%d", fi.Mode(), st.Uid, st.Gid, st.Nlink)
		if rel != "." {
			// The root's own metadata is the tool's to choose (tar
			// and Apply leave the directory they are given as is).
			rec += fmt.Sprintf(" mtime=%d", st.Mtim.Sec)
		}
		switch {
		case fi.Mode().IsRegular():
			bytes += fi.Size()
			h, err := hashFile(p)
			if err != nil {
				return err
			}
			rec += fmt.Sprintf(" size=%d sha256=%s", fi.Size(), h)
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			rec += " -> " + t
		}
		out[rel] = rec
		return nil
	})
	return out, bytes, err
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// compareTrees compares every tool's tree with the first tool's and
// returns a line per difference (at most a few per tool), the number of
// entries and the bytes of regular files in the first tree.
func compareTrees(trees map[string]string, tools []string) ([]string, int, int64, error) {
	ref := tools[0]
	want, bytes, err := manifest(trees[ref])
	if err != nil {
		return nil, 0, 0, err
	}
	var diffs []string
	for _, t := range tools[1:] {
		got, _, err := manifest(trees[t])
		if err != nil {
			return nil, 0, 0, err
		}
		var lines []string
		for p, w := range want {
			if g, ok := got[p]; !ok {
				lines = append(lines, fmt.Sprintf("%s: %s only: %s", p, ref, w))
			} else if g != w {
				lines = append(lines, fmt.Sprintf("%s: %s has %s; %s has %s", p, ref, w, t, g))
			}
		}
		for p, g := range got {
			if _, ok := want[p]; !ok {
				lines = append(lines, fmt.Sprintf("%s: %s only: %s", p, t, g))
			}
		}
		sort.Strings(lines)
		if n := len(lines); n > 5 {
			lines = append(lines[:5], fmt.Sprintf("... %d differences in all between %s and %s", n, ref, t))
		}
		diffs = append(diffs, lines...)
	}
	return diffs, len(want), bytes, nil
}
