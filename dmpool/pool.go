// Package dmpool owns every device-mapper operation of the image
// manager: it creates (or re-creates after a reboot) one dm-thin pool on
// block devices or loop-backed files, and creates, snapshots, activates,
// deactivates and deletes thin devices in it.
//
// It talks to /dev/mapper/control with ioctls and makes /dev/mapper
// nodes itself; there is no dmsetup and no udev. Every error path leaves
// no device suspended, and every error names the pool or device.
package dmpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/loopdev"
	"github.com/superfly/flyio-image-manager/internal/units"
)

// SectorSize is the unit of dm table lengths: a thin device's size must
// be a multiple of it.
const SectorSize = 512

const (
	sectorSize       = SectorSize
	defaultBlockSize = 128 << 10
	minBlockSize     = 64 << 10
	maxBlockSize     = 1 << 30
	// metadataHeaderSize is what must be zero for the kernel to format
	// fresh thin-pool metadata instead of reading it.
	metadataHeaderSize = 4096
	// thinSuperblockMagic sits at byte 32 of valid thin-pool metadata.
	thinSuperblockMagic = 27022010
)

// Config describes the pool. Either both DataDevice and MetadataDevice
// are set (real block devices) or both are empty and the pool lives in
// DataFile/MetadataFile attached to loop devices.
type Config struct {
	// Name is the dm name of the pool, e.g. "flyio-pool".
	Name string

	DataDevice, MetadataDevice string

	// DataFile and MetadataFile are created sparse with DataSize and
	// MetadataSize bytes when missing. Existing files are used at their
	// current size.
	DataFile, MetadataFile string
	DataSize, MetadataSize int64

	// BlockSize is the pool allocation unit in bytes: default 128 KiB,
	// a multiple of 64 KiB.
	BlockSize uint32
	// LowWaterMark in data blocks; the kernel raises an event below it.
	LowWaterMark uint64

	// SkipBlockZeroing turns off dm-thin's zeroing of newly provisioned
	// blocks. With it, the unwritten part of a block a new device writes
	// into partially still holds what a deleted device left there, and
	// anyone who reads the raw device (a microVM guest) reads it. The zero
	// value zeroes; Open applies a change to an active pool.
	SkipBlockZeroing bool

	// CheckOnStart: when Open finds the pool active but read-only with
	// needs_check, or failed, and no thin device of it is open, it
	// deactivates them and the pool, runs thin_check on the metadata, clears
	// needs_check if the check passed, and loads the pool again.
	CheckOnStart bool

	// QueueIfNoSpace makes writers block (up to the kernel's
	// no_space_timeout) when data space runs out. The default is
	// error_if_no_space: writers get EIO at once, nothing hangs.
	QueueIfNoSpace bool

	// FormatMetadataDevice allows zeroing the header of a real
	// MetadataDevice that holds no thin-pool metadata. Files never need
	// it: a new file is created zeroed and an existing one is never
	// zeroed.
	FormatMetadataDevice bool
}

// OpenResult says what Open did.
type OpenResult string

const (
	// Found: the pool was active and its table verified.
	Found OpenResult = "found"
	// Recreated: the storage held pool metadata; the table was loaded
	// again and all thin devices are kept.
	Recreated OpenResult = "recreated"
	// Created: a fresh, empty pool.
	Created OpenResult = "created"
)

// Pool is an open dm-thin pool.
type Pool struct {
	cfg          Config
	blockSectors uint32
	// poolDev is "major:minor" of the pool device, the form thin tables
	// use to refer to it.
	poolDev string

	// snapMu serialises suspend/create_snap/resume so two snapshots of
	// one origin cannot resume it under each other.
	snapMu sync.Mutex

	// reload is set when Open's feature reload moved the pool's event
	// counter: the events between reload.before and reload.after are
	// ours, not trouble.
	reload *ReloadEvents

	// loadReadOnly makes Open load the pool with read_only: set when
	// checkOnStart could not show the metadata sound. A failed pool may
	// not have needs_check on disk (its failure can be that the flag
	// could not be written), so the kernel would load it read-write.
	loadReadOnly bool
	// checked is the state ("read-only with needs_check", "failed") in
	// which Open found the pool before checkOnStart made it again; ""
	// when it did not.
	checked string
}

// CheckedOnStart is the trouble Open found the pool in before its
// start-up check made the pool device again, or "": the new device's
// events and mode no longer show it, so the snapshotter's trouble watch
// asks here.
func (p *Pool) CheckedOnStart() string { return p.checked }

// ReloadEvents is the pool's event counter just before and just after the
// table reload Open made.
type ReloadEvents struct{ Before, After uint32 }

// OpenReload reports the event counter around the table reload Open made,
// or nil when Open reloaded nothing or the reload raised no event.
func (p *Pool) OpenReload() *ReloadEvents { return p.reload }

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" || strings.ContainsRune(c.Name, '/') || len(c.Name) >= unix.DM_NAME_LEN {
		return c, fmt.Errorf("pool name %q: must be 1..127 bytes without '/': %w", c.Name, errdefs.ErrInvalidArgument)
	}
	if c.BlockSize == 0 {
		c.BlockSize = defaultBlockSize
	}
	if c.BlockSize%minBlockSize != 0 || c.BlockSize > maxBlockSize {
		return c, fmt.Errorf("pool %q: block size %d is not a multiple of 64KiB up to 1GiB: %w", c.Name, c.BlockSize, errdefs.ErrInvalidArgument)
	}
	devs := c.DataDevice != "" || c.MetadataDevice != ""
	if devs && (c.DataDevice == "" || c.MetadataDevice == "") {
		return c, fmt.Errorf("pool %q: set both DataDevice and MetadataDevice: %w", c.Name, errdefs.ErrInvalidArgument)
	}
	if !devs && (c.DataFile == "" || c.MetadataFile == "") {
		return c, fmt.Errorf("pool %q: set DataDevice/MetadataDevice or DataFile/MetadataFile: %w", c.Name, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

func (c Config) usesFiles() bool { return c.DataDevice == "" }

// features are the thin-pool feature arguments of the table. Discards are
// never disabled (no ignore_discard, no no_discard_passdown): a discard of
// a thin device's blocks reaches the data device, so a loop file gets its
// space back and an SSD its TRIM.
func (c Config) features() []string {
	var f []string
	if c.SkipBlockZeroing {
		f = append(f, "skip_block_zeroing")
	}
	if !c.QueueIfNoSpace {
		f = append(f, "error_if_no_space")
	}
	return f
}

// loadFeatures are the features Open loads the pool with: the config's,
// and read_only when a start-up check could not show the metadata sound.
func (p *Pool) loadFeatures() []string {
	f := p.cfg.features()
	if p.loadReadOnly {
		f = append(f, "read_only")
	}
	return f
}

// Inspect returns the pool cfg describes only if it is already active and
// verified, changing nothing: no storage is created, attached or reloaded.
// Read-only commands (status, gc --dry-run) use it so that looking never
// creates a pool. It fails with ErrPoolMissing when the pool is not active.
func Inspect(ctx context.Context, cfg Config) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, blockSectors: cfg.BlockSize / sectorSize}
	info, err := GetDeviceInfo(cfg.Name)
	if err != nil {
		return nil, err
	}
	if !info.Exists || !info.Active {
		return nil, fmt.Errorf("pool %q is not active (run 'flyio-image-manager setup-pool' or start the daemon): %w", cfg.Name, ErrPoolMissing)
	}
	if err := p.verifyActive(info); err != nil {
		return nil, err
	}
	return p, nil
}

// Open makes the pool described by cfg available: it verifies an active
// pool, or re-attaches the storage and reloads the table (after a
// reboot), or creates a fresh pool.
func Open(ctx context.Context, cfg Config) (_ *Pool, _ OpenResult, retErr error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, "", err
	}
	p := &Pool{cfg: cfg, blockSectors: cfg.BlockSize / sectorSize}

	info, err := GetDeviceInfo(cfg.Name)
	if err != nil {
		return nil, "", err
	}
	if info.Exists && info.Active {
		if err := p.verifyActive(info); err != nil {
			return nil, "", err
		}
		checked, err := p.checkOnStart(ctx)
		if err != nil {
			return nil, "", err
		}
		if !checked {
			if err := p.applyFeatures(ctx); err != nil {
				return nil, "", err
			}
			return p, Found, nil
		}
		// The pool device is gone: load it again below.
		if info, err = GetDeviceInfo(cfg.Name); err != nil {
			return nil, "", err
		}
	}

	fresh, err := p.prepareStorage()
	if err != nil {
		return nil, "", err
	}

	meta, data, err := p.attach()
	if err != nil {
		return nil, "", err
	}
	// Until the dm table holds the loops open, these handles keep the
	// autoclear loops alive.
	defer meta.close()
	defer data.close()

	dataBytes, err := deviceSize(data.path)
	if err != nil {
		return nil, "", fmt.Errorf("pool %q: %w", cfg.Name, err)
	}
	dataSectors := uint64(dataBytes/sectorSize) / uint64(p.blockSectors) * uint64(p.blockSectors)
	if dataSectors == 0 {
		return nil, "", fmt.Errorf("pool %q: data device %s (%d bytes) is smaller than one %d byte block: %w",
			cfg.Name, data.path, dataBytes, cfg.BlockSize, errdefs.ErrInvalidArgument)
	}
	table := []Target{{
		Length: dataSectors,
		Type:   "thin-pool",
		Params: poolTable{
			MetadataDev: devString(meta.major, meta.minor), DataDev: devString(data.major, data.minor),
			BlockSectors: p.blockSectors, LowWaterMark: cfg.LowWaterMark, Features: p.loadFeatures(),
		}.String(),
	}}

	created := false
	if !info.Exists {
		if info, err = CreateDevice(cfg.Name); err != nil {
			return nil, "", fmt.Errorf("pool %q: %w", cfg.Name, err)
		}
		created = true
	}
	// A device that exists without a live table is a leftover of a
	// crash between create and resume: reuse it.
	defer func() {
		if retErr != nil && created {
			if err := RemoveDevice(cfg.Name, false); err != nil {
				log.G(ctx).WithError(err).Warnf("pool %q: cleanup after failed open", cfg.Name)
			}
		}
	}()
	if err := LoadTable(cfg.Name, table); err != nil {
		return nil, "", fmt.Errorf("pool %q: %w", cfg.Name, err)
	}
	if err := Resume(cfg.Name); err != nil {
		return nil, "", fmt.Errorf("pool %q: %w", cfg.Name, err)
	}
	if err := makeNode(cfg.Name, info.Dev); err != nil {
		return nil, "", fmt.Errorf("pool %q: %w", cfg.Name, err)
	}
	p.poolDev = devString(info.Major, info.Minor)
	res := Recreated
	if fresh {
		res = Created
	}
	log.G(ctx).WithField("pool", cfg.Name).Infof("device-mapper pool %s (%s of data, block %s)", res, units.Bytes(dataSectors*512), units.Bytes(uint64(cfg.BlockSize)))
	return p, res, nil
}

// liveTable reads and parses the live table of pool name.
func liveTable(name string) (Target, poolTable, error) {
	ts, err := Table(name)
	if err != nil {
		return Target{}, poolTable{}, fmt.Errorf("pool %q: %w", name, err)
	}
	if len(ts) != 1 || ts[0].Type != "thin-pool" {
		return Target{}, poolTable{}, fmt.Errorf("pool %q: device has table %q, not a thin-pool: %w", name, tableString(ts), ErrMismatch)
	}
	pt, err := parsePoolTable(ts[0].Params)
	if err != nil {
		return Target{}, poolTable{}, fmt.Errorf("pool %q: %w", name, err)
	}
	return ts[0], pt, nil
}

// verifyActive checks that the live pool table uses the configured
// storage and block size, and resumes a pool a crash left suspended.
func (p *Pool) verifyActive(info DeviceInfo) error {
	name := p.cfg.Name
	_, pt, err := liveTable(name)
	if err != nil {
		return err
	}
	if pt.BlockSectors != p.blockSectors {
		return fmt.Errorf("pool %q: active block size %d sectors, configured %d: %w", name, pt.BlockSectors, p.blockSectors, ErrMismatch)
	}
	if err := p.checkDev("metadata", pt.MetadataDev, p.cfg.MetadataDevice, p.cfg.MetadataFile); err != nil {
		return err
	}
	if err := p.checkDev("data", pt.DataDev, p.cfg.DataDevice, p.cfg.DataFile); err != nil {
		return err
	}
	if info.Suspended {
		if err := Resume(name); err != nil {
			return fmt.Errorf("pool %q was left suspended: %w", name, err)
		}
	}
	if err := makeNode(name, info.Dev); err != nil {
		return fmt.Errorf("pool %q: %w", name, err)
	}
	p.poolDev = devString(info.Major, info.Minor)
	return nil
}

func (p *Pool) checkDev(role, actual, device, file string) error {
	var maj, min uint32
	if _, err := fmt.Sscanf(actual, "%d:%d", &maj, &min); err != nil {
		return fmt.Errorf("pool %q: %s device %q in table: %w", p.cfg.Name, role, actual, ErrMismatch)
	}
	if device != "" {
		var st unix.Stat_t
		if err := unix.Stat(device, &st); err != nil {
			return fmt.Errorf("pool %q: %s device %s: %w", p.cfg.Name, role, device, err)
		}
		if unix.Major(uint64(st.Rdev)) != maj || unix.Minor(uint64(st.Rdev)) != min {
			return fmt.Errorf("pool %q: active table uses %s device %s, configured %s (%d:%d): %w",
				p.cfg.Name, role, actual, device, unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), ErrMismatch)
		}
		return nil
	}
	if !loopdev.SameFile(maj, min, file) {
		return fmt.Errorf("pool %q: active table uses %s device %s backed by %q, configured file %s: %w",
			p.cfg.Name, role, actual, loopdev.BackingFile(maj, min), file, ErrMismatch)
	}
	return nil
}

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

// Name is the dm name of the pool.
func (p *Pool) Name() string { return p.cfg.Name }

// DevicePath is /dev/mapper/<name> of the pool.
func (p *Pool) DevicePath() string { return DevicePath(p.cfg.Name) }

// BlockSize is the pool allocation unit in bytes.
func (p *Pool) BlockSize() uint32 { return p.cfg.BlockSize }

// Status returns the pool's kernel status, after the kernel commits the
// pool metadata so that the counts are current and durable.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	return p.status(ctx, statusInfoFlush)
}

// Events returns the pool's status with its event counter, without the
// metadata commit Status makes: the mode flags and the counter are what
// the trouble watch needs, and it runs often.
func (p *Pool) Events(ctx context.Context) (Status, error) {
	return stableEvents(ctx, func() (Status, error) { return p.status(ctx, statusInfoNoFlush) }, func() (uint32, error) {
		info, err := GetDeviceInfo(p.cfg.Name)
		return info.EventNr, err
	})
}

// stableEvents reads the status until its event counter is the one read
// right after it. The kernel reads the counter before the pool's mode in
// one status ioctl: a pool that goes back to write mode between the two
// would be seen "one event, healthy" (a low-water mark) twice instead of
// a trip into trouble and back. When the counter is the same after the
// status, no mode change came between the two reads.
func stableEvents(ctx context.Context, read func() (Status, error), counter func() (uint32, error)) (Status, error) {
	var s Status
	for range 10 {
		var err error
		if s, err = read(); err != nil {
			return s, err
		}
		after, err := counter()
		if err != nil {
			return s, err
		}
		if after == s.EventNr {
			return s, nil
		}
		if err := ctx.Err(); err != nil {
			return s, err
		}
	}
	// Events keep coming: report a counter that cannot pass for one
	// quiet event, so the watcher counts trouble rather than miss it.
	s.EventNr += 2
	return s, nil
}

func (p *Pool) status(ctx context.Context, get func(string) ([]Target, DeviceInfo, error)) (Status, error) {
	ts, info, err := get(p.cfg.Name)
	if err != nil {
		if isErrno(err, unix.ENXIO) {
			return Status{}, fmt.Errorf("pool %q: %w: %w", p.cfg.Name, ErrPoolMissing, err)
		}
		return Status{}, fmt.Errorf("pool %q: %w", p.cfg.Name, err)
	}
	if len(ts) != 1 || ts[0].Type != "thin-pool" {
		return Status{}, fmt.Errorf("pool %q: status %q is not a thin-pool's: %w", p.cfg.Name, tableString(ts), ErrPoolMissing)
	}
	s, err := parsePoolStatus(ts[0].Params)
	if err != nil {
		return Status{}, fmt.Errorf("pool %q: %w", p.cfg.Name, err)
	}
	s.DataBlockSize = uint64(p.cfg.BlockSize)
	s.EventNr = info.EventNr
	return s, nil
}

// CheckWritable reports, as ErrPoolFailed, ErrPoolReadOnly or ErrPoolFull,
// a pool that cannot take new devices. It turns such a pool into a clear
// error. Messages still succeed on a pool that is out of data space, so
// this is the only place that reports it before writes fail.
//
// It asks for the status without a metadata commit: the mode flags are
// reported either way, the counts are the in-core ones, and the
// create_thin or create_snap that follows commits anyway (a commit here
// cost a third of a snapshot's time).
func (p *Pool) CheckWritable(ctx context.Context, what string) error {
	s, err := p.status(ctx, statusInfoNoFlush)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case s.Fail:
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, ErrPoolFailed)
	case s.ReadOnly || s.NeedsCheck:
		return fmt.Errorf("pool %q: %s: %w (mode ro=%v needs_check=%v)", p.cfg.Name, what, ErrPoolReadOnly, s.ReadOnly, s.NeedsCheck)
	case s.Full():
		return fmt.Errorf("pool %q: %s: %w (data %d/%d blocks, metadata %d/%d blocks)", p.cfg.Name, what, ErrPoolFull,
			s.UsedDataBlocks, s.TotalDataBlocks, s.UsedMetaBlocks, s.TotalMetaBlocks)
	}
	return nil
}

// Remove removes the pool table and detaches its loop devices; the
// files are kept, so Open recreates the pool with its data. It fails
// with ErrDeviceBusy while thin devices of the pool are active.
func (p *Pool) Remove(ctx context.Context) error {
	name := p.cfg.Name
	active, err := p.ListActive(ctx)
	if err != nil {
		return err
	}
	if len(active) > 0 {
		names := make([]string, len(active))
		for i, a := range active {
			names[i] = a.Name
		}
		return fmt.Errorf("pool %q: remove: thin devices %v still active: %w", name, names, ErrDeviceBusy)
	}
	info, err := GetDeviceInfo(name)
	if err != nil {
		return err
	}
	if !info.Exists {
		removeNode(name)
		return nil
	}
	var loops [][2]uint32
	if ts, err := Table(name); err == nil && len(ts) == 1 && ts[0].Type == "thin-pool" {
		if pt, err := parsePoolTable(ts[0].Params); err == nil {
			for _, d := range []string{pt.MetadataDev, pt.DataDev} {
				var maj, min uint32
				if _, err := fmt.Sscanf(d, "%d:%d", &maj, &min); err == nil {
					loops = append(loops, [2]uint32{maj, min})
				}
			}
		}
	}
	if info.Suspended {
		if err := Resume(name); err != nil {
			return fmt.Errorf("pool %q: %w", name, err)
		}
	}
	if err := removeWithRetry(ctx, name, false); err != nil {
		return fmt.Errorf("pool %q: %w", name, err)
	}
	if p.cfg.usesFiles() {
		// Autoclear detaches loops we attached; a loop someone else
		// attached to our file has no autoclear, so clear it here.
		for _, l := range loops {
			for _, f := range []string{p.cfg.MetadataFile, p.cfg.DataFile} {
				if loopdev.SameFile(l[0], l[1], f) {
					if err := loopdev.Detach(fmt.Sprintf("/dev/loop%d", l[1])); err != nil {
						log.G(ctx).WithError(err).Warnf("pool %q: detach loop of %s", name, f)
					}
				}
			}
		}
	}
	return nil
}

// removeWithRetry removes a device, retrying EBUSY briefly: a device
// just unmounted or closed can stay open for a moment (e.g. while the
// kernel releases a file system or a udev-less blkid probe ends).
func removeWithRetry(ctx context.Context, name string, deferred bool) error {
	const attempts = 20
	delay := 10 * time.Millisecond
	var err error
	for i := 0; i < attempts; i++ {
		err = RemoveDevice(name, deferred)
		if err == nil || isErrno(err, unix.ENXIO) {
			removeNode(name)
			return nil
		}
		if !isErrno(err, unix.EBUSY) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove %q: %w: %w", name, ErrDeviceBusy, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
	info, _ := GetDeviceInfo(name)
	return fmt.Errorf("remove %q (open count %d%s): %w: %w", name, info.OpenCount, holdersNote(info), ErrDeviceBusy, err)
}

// holdersNote names the devices stacked on the device info describes
// (sysfs holders: device-mapper devices whose tables use it), so that an
// operator sees what keeps it busy; "" when none is or sysfs has no
// answer (then an open file descriptor or a mount keeps it).
func holdersNote(info DeviceInfo) string {
	dir := fmt.Sprintf("/sys/dev/block/%d:%d/holders", info.Major, info.Minor)
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		return ""
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if b, err := os.ReadFile(filepath.Join(dir, n, "dm", "name")); err == nil {
			n = strings.TrimSpace(string(b))
		}
		names = append(names, n)
	}
	return fmt.Sprintf(", held by %s", strings.Join(names, ", "))
}
