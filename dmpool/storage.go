package dmpool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/loopdev"
)

// prepareStorage creates missing files and decides, safely, whether
// the metadata is fresh. A file is zeroed only when this call created
// it; existing storage is never zeroed unless it is a real device, holds
// no thin metadata, and FormatMetadataDevice allows it.
func (p *Pool) prepareStorage() (fresh bool, _ error) {
	name := p.cfg.Name
	metaPath := p.cfg.MetadataDevice
	if !p.cfg.usesFiles() {
		// Before the metadata device is looked at, let alone formatted.
		if _, err := os.Stat(p.cfg.DataDevice); err != nil {
			return false, fmt.Errorf("pool %q: data device: %w", name, err)
		}
	}
	if p.cfg.usesFiles() {
		metaPath = p.cfg.MetadataFile
		create, err := checkPoolFiles(name, p.cfg.DataFile, p.cfg.MetadataFile)
		if err != nil {
			return false, err
		}
		if create {
			if err := createPoolFiles(p.cfg); err != nil {
				return false, fmt.Errorf("pool %q: %w", name, err)
			}
			return true, nil
		}
	}
	hdr, err := readHeader(metaPath)
	if err != nil {
		return false, fmt.Errorf("pool %q: %w", name, err)
	}
	switch {
	case hasThinMagic(hdr):
		return false, nil
	case allZero(hdr):
		return true, nil // the kernel formats an all-zero header
	case !p.cfg.usesFiles() && p.cfg.FormatMetadataDevice:
		if err := zeroHeader(metaPath); err != nil {
			return false, fmt.Errorf("pool %q: %w", name, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("pool %q: %s holds no thin-pool metadata and is not zeroed; refusing to format it: %w",
		name, metaPath, ErrMismatch)
}

// checkPoolFiles decides whether a loopback pool is new: only when both
// of its files are absent. One file without the other is a disk that is
// not mounted or a file moved away: creating the missing one would bring
// the pool up with every mapping pointing at zeros (a new data file) or
// format metadata over data that is still there (a new metadata file).
// That is refused, naming the missing file, and nothing is changed.
func checkPoolFiles(name, dataFile, metaFile string) (create bool, _ error) {
	dataOK, err := fileExists(dataFile)
	if err != nil {
		return false, fmt.Errorf("pool %q: data file: %w", name, err)
	}
	metaOK, err := fileExists(metaFile)
	if err != nil {
		return false, fmt.Errorf("pool %q: metadata file: %w", name, err)
	}
	switch {
	case dataOK && metaOK:
		return false, nil
	case !dataOK && !metaOK:
		return true, nil
	case !dataOK:
		return false, fmt.Errorf("pool %q: data file %s is missing but metadata file %s exists; "+
			"refusing to create an empty data file under existing metadata (is its disk mounted? was it moved?): %w",
			name, dataFile, metaFile, ErrMismatch)
	default:
		return false, fmt.Errorf("pool %q: metadata file %s is missing but data file %s exists; "+
			"refusing to format new metadata over existing data (is its disk mounted? was it moved?): %w",
			name, metaFile, dataFile, ErrMismatch)
	}
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, err
}

// createPoolFiles makes the directories and both files of a new loopback
// pool, the metadata header zeroed. On failure neither file is left, so a
// retry sees both absent again rather than one without the other.
func createPoolFiles(cfg Config) (err error) {
	for _, f := range []string{cfg.DataFile, cfg.MetadataFile} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			return err
		}
	}
	var made []string
	defer func() {
		if err != nil {
			for _, f := range made {
				os.Remove(f)
			}
		}
	}()
	for _, f := range []struct {
		what, path string
		size       int64
	}{{"data file", cfg.DataFile, cfg.DataSize}, {"metadata file", cfg.MetadataFile, cfg.MetadataSize}} {
		created, err := createSparse(f.path, f.size)
		if err != nil {
			return fmt.Errorf("%s: %w", f.what, err)
		}
		if !created {
			return fmt.Errorf("%s %s appeared while the pool was being created: %w", f.what, f.path, ErrMismatch)
		}
		made = append(made, f.path)
	}
	return zeroHeader(cfg.MetadataFile)
}

func createSparse(path string, size int64) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if size <= 0 {
		os.Remove(path)
		return false, fmt.Errorf("create %s: size %d must be positive: %w", path, size, errdefs.ErrInvalidArgument)
	}
	if err := f.Truncate(size); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("size %s to %d bytes: %w", path, size, err)
	}
	return true, f.Sync()
}

func readHeader(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read metadata header: %w", err)
	}
	defer f.Close()
	b := make([]byte, metadataHeaderSize)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read metadata header of %s: %w", path, err)
	}
	return b, nil
}

func zeroHeader(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("zero metadata header: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, metadataHeaderSize), 0); err != nil {
		return fmt.Errorf("zero metadata header of %s: %w", path, err)
	}
	return f.Sync()
}

func hasThinMagic(hdr []byte) bool {
	if len(hdr) < 40 {
		return false
	}
	var m uint64
	for i := 7; i >= 0; i-- {
		m = m<<8 | uint64(hdr[32+i])
	}
	return m == thinSuperblockMagic
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// backing is one attached storage device.
type backing struct {
	path         string
	major, minor uint32
	loop         *loopdev.Device
}

func (b *backing) close() {
	if b != nil && b.loop != nil {
		b.loop.Close()
	}
}

func (p *Pool) attach() (meta, data *backing, _ error) {
	if !p.cfg.usesFiles() {
		m, err := blockDev(p.cfg.MetadataDevice)
		if err != nil {
			return nil, nil, fmt.Errorf("pool %q: metadata: %w", p.cfg.Name, err)
		}
		d, err := blockDev(p.cfg.DataDevice)
		if err != nil {
			return nil, nil, fmt.Errorf("pool %q: data: %w", p.cfg.Name, err)
		}
		return m, d, nil
	}
	params := loopdev.Params{Direct: true, Autoclear: true}
	ml, err := loopdev.Attach(p.cfg.MetadataFile, params)
	if err != nil {
		return nil, nil, fmt.Errorf("pool %q: metadata: %w", p.cfg.Name, err)
	}
	dl, err := loopdev.Attach(p.cfg.DataFile, params)
	if err != nil {
		ml.Close()
		return nil, nil, fmt.Errorf("pool %q: data: %w", p.cfg.Name, err)
	}
	return &backing{path: ml.Path, major: ml.Major, minor: ml.Minor, loop: ml},
		&backing{path: dl.Path, major: dl.Major, minor: dl.Minor, loop: dl}, nil
}

func blockDev(path string) (*backing, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%s is not a block device: %w", path, errdefs.ErrInvalidArgument)
	}
	return &backing{path: path, major: unix.Major(uint64(st.Rdev)), minor: unix.Minor(uint64(st.Rdev))}, nil
}

func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", path, err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return n, nil
}
