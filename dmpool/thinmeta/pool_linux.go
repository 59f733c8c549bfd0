package thinmeta

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// ErrSnapshotHeld means the pool already holds a metadata snapshot this
// read did not take: its view can be arbitrarily old (a forgotten
// reserve_metadata_snap before thin_dump -m, a failed release, a crash
// inside a read), so it is never used.
var ErrSnapshotHeld = errors.New("a metadata snapshot is already held")

// ReadPool lists the thin devices of the active pool called pool. It
// reserves a metadata snapshot, reads it from the pool's metadata device
// with O_DIRECT (the kernel writes metadata below the page cache, so a
// buffered read could return blocks cached by an earlier run) and
// releases the snapshot. A snapshot someone else holds is refused
// (ErrSnapshotHeld, with how to release it): only a snapshot taken by
// this read is known to be no older than the read.
func ReadPool(ctx context.Context, pool string) (*Metadata, error) {
	f, err := openMetadata(pool)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readReserved(ctx, liveDM(pool), alignedReader{f})
}

// openMetadata opens the metadata device of the active pool called pool.
func openMetadata(pool string) (*os.File, error) {
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
	f, err := openDirect(metaDev[0])
	if err != nil {
		return nil, fmt.Errorf("pool %q: metadata device %s: %w", pool, metaDev[0], err)
	}
	return f, nil
}

// dm is the pool's status and messages; a fake in unit tests.
type dm struct {
	pool string
	// heldRoot is the "held metadata root" field of the pool status,
	// "-" when none is held.
	heldRoot func() (string, error)
	message  func(msg string) error
}

func liveDM(pool string) dm {
	return dm{
		pool: pool,
		heldRoot: func() (string, error) {
			ts, err := dmpool.TargetStatus(pool)
			if err != nil {
				return "", err
			}
			if len(ts) != 1 {
				return "", fmt.Errorf("unexpected status %v", ts)
			}
			f := strings.Fields(ts[0].Params)
			if len(f) < 4 {
				return "", fmt.Errorf("unexpected status %q", ts[0].Params)
			}
			return f[3], nil
		},
		message: func(msg string) error { _, err := dmpool.Message(pool, msg); return err },
	}
}

// readReserved reserves a metadata snapshot, reads it and releases it,
// refusing one already held. The held root is checked again after the
// read: a snapshot released (and its blocks reused) under the read makes
// it fail rather than return what those blocks hold now.
func readReserved(ctx context.Context, d dm, r io.ReaderAt) (*Metadata, error) {
	var md *Metadata
	err := underSnapshot(ctx, d, func(root uint64) (err error) {
		md, err = Read(r, root)
		return err
	})
	return md, err
}

// ReadPoolExclusive is ReadExclusive on the active pool called pool,
// under a metadata snapshot taken and released as ReadPool does. It
// never waits for another reader of this process (gc): while one reads
// it fails at once with ErrReaderBusy, and the caller answers from what
// it has.
func ReadPoolExclusive(ctx context.Context, pool string, pairs []Pair) (*Usage, error) {
	f, err := openMetadata(pool)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var u *Usage
	err = tryUnderSnapshot(ctx, liveDM(pool), func(root uint64) (err error) {
		u, err = ReadExclusive(alignedReader{f}, root, pairs)
		return err
	})
	return u, err
}

// ReadPoolMapped is ReadMapped on the active pool called pool, under a
// metadata snapshot taken and released as ReadPool does. Unlike
// ReadPoolExclusive it waits for another reader of this process: a
// publish has no cached answer to fall back on. The ranges are those of
// the moment of the snapshot; the caller keeps the device from being
// written (a base device is read-only) for them to stay true.
func ReadPoolMapped(ctx context.Context, pool string, dev uint32) (*Mapped, error) {
	f, err := openMetadata(pool)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var m *Mapped
	err = underSnapshot(ctx, liveDM(pool), func(root uint64) (err error) {
		m, err = ReadMapped(alignedReader{f}, root, dev)
		return err
	})
	return m, err
}

// snapMu serialises underSnapshot.
var snapMu sync.Mutex

// ErrReaderBusy means another metadata snapshot read of this process
// (gc's) is running; see ReadPoolExclusive.
var ErrReaderBusy = errors.New("another metadata snapshot read of this process is running")

// tryUnderSnapshot is underSnapshot, or ErrReaderBusy at once when
// another reader holds snapMu.
func tryUnderSnapshot(ctx context.Context, d dm, read func(root uint64) error) error {
	if !snapMu.TryLock() {
		return fmt.Errorf("pool %q: %w", d.pool, ErrReaderBusy)
	}
	defer snapMu.Unlock()
	return reserveAndRead(ctx, d, read)
}

// underSnapshot reserves a metadata snapshot, calls read with its root
// and releases it; see readReserved.
func underSnapshot(ctx context.Context, d dm, read func(root uint64) error) error {
	// One reader at a time in this process: a pool holds one metadata
	// snapshot, and a second reader (gc while Usage reads) would find
	// the first one's and refuse it as not its own.
	snapMu.Lock()
	defer snapMu.Unlock()
	return reserveAndRead(ctx, d, read)
}

// reserveAndRead is underSnapshot's work; snapMu is held.
func reserveAndRead(ctx context.Context, d dm, read func(root uint64) error) error {
	held, err := d.heldRoot()
	if err != nil {
		return fmt.Errorf("pool %q: %w", d.pool, err)
	}
	if held != "-" {
		return fmt.Errorf("pool %q: %w (root block %s), not taken by this read, so its view may be arbitrarily old and "+
			"is not used; if no thin_dump, thin_ls or other reader is using it, release it with "+
			"'flyio-image-manager pool release-metadata-snap' (or 'dmsetup message %s 0 release_metadata_snap') and retry",
			d.pool, ErrSnapshotHeld, held, d.pool)
	}
	// Recorded before reserving: a crash between the two leaves a file
	// and no hold, which the next start just removes.
	if err := writeMarker(d.pool); err != nil {
		return fmt.Errorf("pool %q: %w", d.pool, err)
	}
	if err := d.message("reserve_metadata_snap"); err != nil {
		removeMarker(ctx)
		return fmt.Errorf("pool %q: reserve_metadata_snap: %w", d.pool, err)
	}
	held, err = d.heldRoot()
	defer func() {
		// Release ours only: if it is gone, whatever is held now is
		// someone else's.
		if now, err := d.heldRoot(); err != nil || now != held {
			log.G(ctx).Warnf("pool %q: the metadata snapshot this read took (root %s) is no longer held (%q, %v); not releasing", d.pool, held, now, err)
			if err == nil {
				removeMarker(ctx)
			}
			return
		}
		if err := d.message("release_metadata_snap"); err != nil {
			// The file stays: the hold is still ours, and the next
			// start releases it.
			log.G(ctx).WithError(err).Warnf("pool %q: releasing the metadata snapshot", d.pool)
			return
		}
		removeMarker(ctx)
	}()
	if err == nil && held == "-" {
		err = errors.New("no held metadata root after reserve_metadata_snap")
	}
	if err != nil {
		return fmt.Errorf("pool %q: %w", d.pool, err)
	}
	root, err := strconv.ParseUint(held, 10, 64)
	if err != nil {
		return fmt.Errorf("pool %q: held metadata root %q: %w", d.pool, held, err)
	}
	if err := read(root); err != nil {
		return fmt.Errorf("pool %q: metadata snapshot at block %d: %w", d.pool, root, err)
	}
	if after, err := d.heldRoot(); err != nil || after != held {
		return fmt.Errorf("pool %q: the metadata snapshot at block %d was released during the read (held root now %q, %v)", d.pool, root, after, err)
	}
	return nil
}

// Release releases the pool's held metadata snapshot, whoever took it.
// Only for an operator who knows no reader uses it.
func Release(pool string) (was string, _ error) {
	d := liveDM(pool)
	held, err := d.heldRoot()
	if err != nil {
		return "", fmt.Errorf("pool %q: %w", pool, err)
	}
	if held == "-" {
		return "-", nil
	}
	if err := d.message("release_metadata_snap"); err != nil {
		return held, fmt.Errorf("pool %q: release_metadata_snap: %w", pool, err)
	}
	return held, nil
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
