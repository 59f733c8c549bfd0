package dmpool

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/loopdev"
	"github.com/superfly/flyio-image-manager/internal/units"
)

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
