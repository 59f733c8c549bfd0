package thinmeta

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// ReadPool lists the thin devices of the active pool called pool. It
// reserves a metadata snapshot, reads it from the pool's metadata device
// with O_DIRECT (the kernel writes metadata below the page cache, so a
// buffered read could return blocks cached by an earlier run) and
// releases the snapshot. A snapshot someone else holds (thin_dump
// --metadata-snap) is read and left held.
func ReadPool(ctx context.Context, pool string) (*Metadata, error) {
	table, err := dmpool.Table(pool)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", pool, err)
	}
	if len(table) != 1 || table[0].Type != "thin-pool" {
		return nil, fmt.Errorf("pool %q: not a thin-pool: %w", pool, dmpool.ErrPoolMissing)
	}
	metaDev := strings.Fields(table[0].Params)
	if len(metaDev) == 0 {
		return nil, fmt.Errorf("pool %q: empty table", pool)
	}

	root, ours, err := reserve(pool)
	if err != nil {
		return nil, err
	}
	if ours {
		defer func() {
			if _, err := dmpool.Message(pool, "release_metadata_snap"); err != nil {
				log.G(ctx).WithError(err).Warnf("pool %q: releasing the metadata snapshot", pool)
			}
		}()
	}
	f, err := openDirect(metaDev[0])
	if err != nil {
		return nil, fmt.Errorf("pool %q: metadata device %s: %w", pool, metaDev[0], err)
	}
	defer f.Close()
	md, err := Read(alignedReader{f}, root)
	if err != nil {
		return nil, fmt.Errorf("pool %q: metadata snapshot at block %d: %w", pool, root, err)
	}
	return md, nil
}

// reserve returns the block of a held metadata snapshot, reserving one if
// none is held; ours says whether it must be released.
func reserve(pool string) (root uint64, ours bool, _ error) {
	held := func() (uint64, bool, error) {
		ts, err := dmpool.TargetStatus(pool)
		if err != nil {
			return 0, false, fmt.Errorf("pool %q: %w", pool, err)
		}
		if len(ts) != 1 {
			return 0, false, fmt.Errorf("pool %q: unexpected status %v", pool, ts)
		}
		f := strings.Fields(ts[0].Params)
		if len(f) < 4 || f[3] == "-" {
			return 0, false, nil
		}
		n, err := strconv.ParseUint(f[3], 10, 64)
		return n, err == nil, err
	}
	if r, ok, err := held(); err != nil || ok {
		return r, false, err
	}
	if _, err := dmpool.Message(pool, "reserve_metadata_snap"); err != nil {
		return 0, false, fmt.Errorf("pool %q: reserve_metadata_snap: %w", pool, err)
	}
	r, ok, err := held()
	if err == nil && !ok {
		err = errors.New("no held metadata root after reserve_metadata_snap")
	}
	if err != nil {
		dmpool.Message(pool, "release_metadata_snap")
		return 0, false, fmt.Errorf("pool %q: %w", pool, err)
	}
	return r, true, nil
}

// openDirect opens the block device "major:minor" for O_DIRECT reads. The
// node is looked up in sysfs: hosts without udev have no /dev/block links.
func openDirect(majMin string) (*os.File, error) {
	uevent, err := os.Open(filepath.Join("/sys/dev/block", majMin, "uevent"))
	if err != nil {
		return nil, err
	}
	defer uevent.Close()
	var name string
	sc := bufio.NewScanner(uevent)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "DEVNAME="); ok {
			name = v
		}
	}
	if name == "" {
		return nil, fmt.Errorf("no DEVNAME for block device %s", majMin)
	}
	fd, err := unix.Open(filepath.Join("/dev", name), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/dev/" + name, Err: err}
	}
	return os.NewFile(uintptr(fd), "/dev/"+name), nil
}

// alignedReader reads through a block-aligned buffer, as O_DIRECT needs.
type alignedReader struct{ f *os.File }

func (a alignedReader) ReadAt(p []byte, off int64) (int, error) {
	raw := make([]byte, len(p)+BlockSize)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % BlockSize); r != 0 {
		shift = BlockSize - r
	}
	buf := raw[shift : shift+len(p)]
	n, err := a.f.ReadAt(buf, off)
	copy(p, buf[:n])
	return n, err
}
