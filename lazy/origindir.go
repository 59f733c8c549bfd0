package lazy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/internal/originname"
)

// The files of an origin's directory, Dir/<name>/.
const (
	manifestFile = "manifest.json" // the block image's manifest, as Create was given it
	cacheFile    = "cache"         // sparse, DeviceSize bytes: the chunks fetched so far
	bitmapFile   = "present"       // one bit per chunk: present in cache and on disk
)

// MaxNameLen bounds an origin's name, which becomes a directory name and
// appears in device and table names.
const MaxNameLen = originname.MaxLen

// ValidateName checks an origin name: 1..MaxNameLen of [a-z0-9-], not
// starting with '-' (internal/originname: the snapshotter checks its
// label with the same rule). Names come from callers and from directory
// entries anyone with access to Dir made, so none is used as a path
// unchecked.
func ValidateName(name string) error { return originname.Validate(name) }

// originFiles are an origin directory's open files.
type originFiles struct {
	man   *blockimage.Manifest
	cache *os.File
	bm    *bitmap
}

func (o *originFiles) close() {
	if o.cache != nil {
		o.cache.Close()
	}
	if o.bm != nil {
		o.bm.f.Close()
	}
}

// openNoFollow opens name in dir, refusing a symlink or anything but a
// regular file: the directory is writable by others than this process.
func openNoFollow(dir, name string, flag int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, name), flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file: %w", name, errdefs.ErrDataLoss)
	}
	return f, nil
}

// sameFile checks that f and g are the same file (device and inode).
func sameFile(f, g *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	gi, err := g.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(fi, gi) {
		return fmt.Errorf("%s was replaced since the origin was opened: %w", f.Name(), errdefs.ErrDataLoss)
	}
	return nil
}

// loadOrigin opens and checks an existing origin directory. Every error
// makes the origin broken: its manifest is parsed as untrusted input
// again, and the cache and bitmap must have the sizes it implies.
func loadOrigin(dir string) (*originFiles, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("not a directory (%s): %w", fi.Mode().Type(), errdefs.ErrDataLoss)
	}
	o := &originFiles{}
	ok := false
	defer func() {
		if !ok {
			o.close()
		}
	}()
	mf, err := openNoFollow(dir, manifestFile, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	o.man, err = blockimage.ParseManifest(mf)
	mf.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", manifestFile, err)
	}
	if o.cache, err = openNoFollow(dir, cacheFile, os.O_RDWR); err != nil {
		return nil, err
	}
	if cfi, err := o.cache.Stat(); err != nil {
		return nil, err
	} else if cfi.Size() != o.man.DeviceSize {
		return nil, fmt.Errorf("%s is %d bytes, want the device size %d: %w", cacheFile, cfi.Size(), o.man.DeviceSize, errdefs.ErrDataLoss)
	}
	bf, err := openNoFollow(dir, bitmapFile, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	if o.bm, err = loadBitmap(bf, len(o.man.Chunks)); err != nil {
		bf.Close()
		return nil, err
	}
	ok = true
	return o, nil
}

// createOrigin makes the directory of a new origin at dir, atomically: it
// is built beside it under a temporary name, synced, and renamed into
// place, so a crash leaves either no origin or a whole one (and perhaps
// a temporary directory, which Open reports and leaves).
func createOrigin(dir string, man *blockimage.Manifest) error {
	data, err := json.Marshal(man)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	write := func(name string, size int64, data []byte) error {
		f, err := os.OpenFile(filepath.Join(tmp, name), os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if data != nil {
			if _, err := f.Write(data); err != nil {
				return err
			}
		} else if err := f.Truncate(size); err != nil {
			return err
		}
		return f.Sync()
	}
	if err := write(manifestFile, 0, data); err != nil {
		return err
	}
	if err := write(cacheFile, man.DeviceSize, nil); err != nil {
		return err
	}
	if err := write(bitmapFile, bitmapSize(len(man.Chunks)), nil); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	// rename(2) would replace an empty directory at dir: refuse
	// anything there instead, whoever made it.
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s exists: %w", dir, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		err = os.Rename(tmp, dir) // no RENAME_NOREPLACE here: the Lstat above has to do
	}
	if err != nil {
		return fmt.Errorf("installing %s: %w", dir, err)
	}
	done = true
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// trunc keeps a hostile name from filling a message.
func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
