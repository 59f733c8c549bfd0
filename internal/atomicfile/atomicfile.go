// Package atomicfile writes a file that appears at its path only once it
// is complete and on disk, safely in a directory others can write to
// (/tmp, a spool): the content goes to a new file beside the path,
// created exclusively under a random name, so nothing planted there (a
// symlink, a file another user can read) is ever opened, and the rename
// that installs it replaces whatever is at the path without following it.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// File is the temporary file being written for a path. Write to it, then
// Commit or Abort.
type File struct {
	*os.File
	path string
}

// Create starts a file for path: ".<name>.tmp-<random>" beside it, mode
// 0600.
func Create(path string) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &File{File: f, path: path}, nil
}

// Check fails unless the temporary name still names our file: a process
// that can write to the directory could have swapped it. Call it before
// handing the name (File.Name) to code that opens it by path.
func (f *File) Check() error {
	want, err := f.Stat()
	if err != nil {
		return err
	}
	got, err := os.Lstat(f.Name())
	if err != nil {
		return err
	}
	if !os.SameFile(want, got) {
		return fmt.Errorf("%s was replaced by another process while it was written; check who can write to %s", f.Name(), filepath.Dir(f.Name()))
	}
	return nil
}

// Commit syncs the file, renames it to its path and syncs the directory.
// On failure the temporary file is removed.
func (f *File) Commit() error {
	err := f.Check()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Abort()
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), f.path); err != nil {
		os.Remove(f.Name())
		return err
	}
	d, err := os.Open(filepath.Dir(f.path))
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		return fmt.Errorf("%s is in place but its directory was not synced, so a crash may lose it: %w", f.path, err)
	}
	return nil
}

// Abort removes the temporary file (if it is still ours) and closes it.
// It does nothing after Commit.
func (f *File) Abort() {
	if f.Check() == nil {
		os.Remove(f.Name())
	}
	f.Close()
}
