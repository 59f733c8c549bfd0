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
	"fmt"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
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

// Name is the dm name of the pool.
func (p *Pool) Name() string { return p.cfg.Name }

// DevicePath is /dev/mapper/<name> of the pool.
func (p *Pool) DevicePath() string { return DevicePath(p.cfg.Name) }

// BlockSize is the pool allocation unit in bytes.
func (p *Pool) BlockSize() uint32 { return p.cfg.BlockSize }
