package dmpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// ActiveDevice is a thin device of the pool with a live table.
type ActiveDevice struct {
	Name string
	ID   uint32
	// Size in bytes.
	Size       uint64
	DevicePath string
	Suspended  bool
	OpenCount  int32
	// Origin is the external origin's "major:minor" as the kernel's
	// table shows it, "" if the device has none.
	Origin string
}

// MaxDeviceID is the largest thin device id (ids are 24 bit).
const MaxDeviceID = 1<<24 - 1

func checkID(pool string, id uint32) error {
	if id > MaxDeviceID {
		return fmt.Errorf("pool %q: thin id %d exceeds %d: %w", pool, id, MaxDeviceID, errdefs.ErrInvalidArgument)
	}
	return nil
}

func checkName(name string) error {
	if name == "" || strings.ContainsRune(name, '/') || len(name) >= unix.DM_NAME_LEN || name == "." || name == ".." {
		return fmt.Errorf("device name %q: must be 1..127 bytes without '/': %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CreateThin creates empty thin device id. ErrDeviceExists means the
// kernel already has that id: take the next one.
func (p *Pool) CreateThin(ctx context.Context, id uint32) error {
	if err := checkID(p.cfg.Name, id); err != nil {
		return err
	}
	what := fmt.Sprintf("create thin %d", id)
	if err := p.CheckWritable(ctx, what); err != nil {
		return err
	}
	_, err := Message(p.cfg.Name, fmt.Sprintf("create_thin %d", id))
	return mapMessageErr(p.cfg.Name, what, err)
}

// CreateSnapshot creates thin device id as a snapshot of originID. If
// the origin is active it is suspended for the snapshot (so in-flight
// writes cannot land in now-shared blocks) and always resumed, also
// when the snapshot fails.
func (p *Pool) CreateSnapshot(ctx context.Context, id, originID uint32) (retErr error) {
	if err := checkID(p.cfg.Name, id); err != nil {
		return err
	}
	if err := checkID(p.cfg.Name, originID); err != nil {
		return err
	}
	what := fmt.Sprintf("snapshot %d of %d", id, originID)
	if err := p.CheckWritable(ctx, what); err != nil {
		return err
	}

	p.snapMu.Lock()
	defer p.snapMu.Unlock()

	active, err := p.ListActive(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var suspended []string
	// Registered before suspending anything: every path out of this
	// function resumes what it suspended.
	defer func() {
		for _, name := range suspended {
			if err := resumeWithRetry(ctx, name); err != nil {
				log.G(ctx).WithError(err).Errorf("pool %q: origin %q left suspended after %s", p.cfg.Name, name, what)
				retErr = errors.Join(retErr, fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err))
			}
		}
	}()
	for _, a := range active {
		if a.ID != originID || a.Suspended {
			continue
		}
		if err := Suspend(a.Name); err != nil {
			return fmt.Errorf("pool %q: %s: origin %w", p.cfg.Name, what, err)
		}
		suspended = append(suspended, a.Name)
	}
	_, err = Message(p.cfg.Name, fmt.Sprintf("create_snap %d %d", id, originID))
	return mapMessageErr(p.cfg.Name, what, err)
}

func resumeWithRetry(ctx context.Context, name string) error {
	return resumeRetrying(ctx, name, Resume)
}

// resumeRetrying is resumeWithRetry with the resume ioctl given.
func resumeRetrying(ctx context.Context, name string, resume func(string) error) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = resume(name); err == nil || isErrno(err, unix.ENXIO) {
			return nil
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
	}
	return err
}

// Activate makes thin device id available as /dev/mapper/<name> with
// size bytes (a multiple of 512) and returns that path. Activating a
// name that is already active with the same table is a no-op; with a
// different table it is ErrDeviceExists.
func (p *Pool) Activate(ctx context.Context, name string, id uint32, size uint64) (string, error) {
	return p.ActivateWithOrigin(ctx, name, id, size, "")
}

// ActivateWithOrigin is Activate with an external origin: origin is a
// block device path ("" is plain Activate). Reads of blocks the thin
// device has not provisioned go to the origin (read-only; beyond its end
// they are zeros), writes provision blocks in the pool. Activating a name
// already active with the same table (same pool, id, length and the same
// origin device number) is a no-op; with another table ErrDeviceExists.
func (p *Pool) ActivateWithOrigin(ctx context.Context, name string, id uint32, size uint64, origin string) (_ string, retErr error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	if err := checkID(p.cfg.Name, id); err != nil {
		return "", err
	}
	if size == 0 || size%sectorSize != 0 {
		return "", fmt.Errorf("activate %q: size %d is not a positive multiple of 512: %w", name, size, errdefs.ErrInvalidArgument)
	}
	var originDev string
	if origin != "" {
		var err error
		if originDev, err = OriginDevice(origin); err != nil {
			return "", fmt.Errorf("activate %q: %w", name, err)
		}
	}
	want := Target{Length: size / sectorSize, Type: "thin", Params: thinTable{PoolDev: p.poolDev, ID: id, Origin: originDev}.String()}

	info, err := GetDeviceInfo(name)
	if err != nil {
		return "", err
	}
	if info.Exists && info.Active {
		ts, err := Table(name)
		if err != nil {
			return "", err
		}
		if len(ts) != 1 || !sameThin(ts[0], want) {
			return "", fmt.Errorf("activate %q as thin %d of pool %q: already active with table %q: %w",
				name, id, p.cfg.Name, tableString(ts), ErrDeviceExists)
		}
		if info.Suspended {
			if err := Resume(name); err != nil {
				return "", err
			}
		}
		if err := makeNode(name, info.Dev); err != nil {
			return "", err
		}
		return DevicePath(name), nil
	}

	created := false
	if !info.Exists {
		info, err = CreateDevice(name)
		if isErrno(err, unix.EEXIST) {
			return "", fmt.Errorf("activate %q: %w: %w", name, ErrDeviceExists, err)
		}
		if err != nil {
			return "", err
		}
		created = true
	}
	defer func() {
		if retErr != nil && created {
			if err := RemoveDevice(name, false); err != nil {
				log.G(ctx).WithError(err).Warnf("activate %q: cleanup", name)
			}
		}
	}()
	if err := LoadTable(name, []Target{want}); err != nil {
		if isErrno(err, unix.ENODATA) {
			return "", fmt.Errorf("activate %q: thin %d is not in pool %q: %w: %w", name, id, p.cfg.Name, ErrNotFound, err)
		}
		if s, serr := p.Status(ctx); serr == nil && s.Fail {
			return "", fmt.Errorf("activate %q: %w: %w", name, ErrPoolFailed, err)
		}
		return "", fmt.Errorf("activate thin %d of pool %q: %w", id, p.cfg.Name, err)
	}
	if err := Resume(name); err != nil {
		return "", fmt.Errorf("activate thin %d of pool %q: %w", id, p.cfg.Name, err)
	}
	if err := makeNode(name, info.Dev); err != nil {
		return "", err
	}
	return DevicePath(name), nil
}

func sameThin(have, want Target) bool {
	if have.Type != want.Type || have.Start != want.Start || have.Length != want.Length {
		return false
	}
	h, err1 := parseThinTable(have.Params)
	w, err2 := parseThinTable(want.Params)
	return err1 == nil && err2 == nil && h == w
}

// Deactivate removes the device name (resuming it first if a crash left
// it suspended). EBUSY is retried briefly, then ErrDeviceBusy. A device
// that does not exist is not an error.
func (p *Pool) Deactivate(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if name == p.cfg.Name {
		return fmt.Errorf("deactivate %q: that is the pool itself: %w", name, errdefs.ErrInvalidArgument)
	}
	info, err := GetDeviceInfo(name)
	if err != nil {
		return err
	}
	if !info.Exists {
		removeNode(name)
		return nil
	}
	if info.Active {
		// Only a device proven to be this pool's is removed.
		ts, err := Table(name)
		if isErrno(err, unix.ENXIO) {
			removeNode(name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("deactivate %q: %w", name, err)
		}
		mine := len(ts) == 1 && ts[0].Type == "thin" && p.owns(ts[0])
		if !mine && len(ts) == 1 {
			if mine, err = p.hiddenThin(name, ts[0]); err != nil {
				return fmt.Errorf("deactivate %q: %w", name, err)
			}
		}
		if !mine {
			return fmt.Errorf("deactivate %q: not a thin device of pool %q (table %q): %w",
				name, p.cfg.Name, tableString(ts), errdefs.ErrInvalidArgument)
		}
	}
	if info.Suspended {
		if err := Resume(name); err != nil && !isErrno(err, unix.ENXIO) {
			return fmt.Errorf("deactivate: %w", err)
		}
	}
	return removeWithRetry(ctx, name, false)
}

func (p *Pool) owns(t Target) bool {
	tt, err := parseThinTable(t.Params)
	return err == nil && tt.PoolDev == p.poolDev
}

// Delete removes thin device id from the pool and returns its blocks.
// The device must not be active (ErrDeviceBusy otherwise); a missing id
// is ErrNotFound.
func (p *Pool) Delete(ctx context.Context, id uint32) error {
	if err := checkID(p.cfg.Name, id); err != nil {
		return err
	}
	what := fmt.Sprintf("delete thin %d", id)
	var err error
	for i := 0; i < 5; i++ {
		_, err = Message(p.cfg.Name, fmt.Sprintf("delete %d", id))
		if !isErrno(err, unix.EBUSY) {
			break
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
	}
	return mapMessageErr(p.cfg.Name, what, err)
}

// ListActive returns the active thin devices of this pool. On a pool in
// fail mode the kernel shows "Fail" instead of a thin device's table, so
// its id is unknown: ListActive then fails with ErrPoolFailed rather than
// leave such a device out (whoever judges devices by id would misjudge).
func (p *Pool) ListActive(ctx context.Context) ([]ActiveDevice, error) {
	active, hidden, err := p.listActive(ctx)
	if err != nil {
		return nil, err
	}
	if len(hidden) > 0 {
		names := make([]string, len(hidden))
		for i, h := range hidden {
			names[i] = h.Name
		}
		return nil, fmt.Errorf("pool %q: the kernel hides the tables of thin devices %v (the pool has failed): %w", p.cfg.Name, names, ErrPoolFailed)
	}
	return active, nil
}

// listActive returns the active thin devices of this pool whose tables
// the kernel shows, and those of a failed pool whose tables it hides
// (ID unknown), found by their dependency on the pool device.
func (p *Pool) listActive(ctx context.Context) (active, hidden []ActiveDevice, err error) {
	names, err := ListDevices()
	if err != nil {
		return nil, nil, fmt.Errorf("pool %q: %w", p.cfg.Name, err)
	}
	for _, n := range names {
		if n.Name == p.cfg.Name {
			continue
		}
		// One ioctl per device: the table reply carries the device's
		// flags and open count too. CreateSnapshot lists under snapMu,
		// so this cost is paid serially by concurrent Prepares.
		ts, info, err := tableStatusInfo(n.Name, unix.DM_STATUS_TABLE_FLAG, "table")
		if isErrno(err, unix.ENXIO) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, nil, fmt.Errorf("pool %q: %w", p.cfg.Name, err)
		}
		if len(ts) != 1 || ts[0].Type != "thin" {
			continue
		}
		d := ActiveDevice{Name: n.Name, Size: ts[0].Length * sectorSize, DevicePath: DevicePath(n.Name),
			Suspended: info.Suspended, OpenCount: info.OpenCount}
		switch tt, perr := parseThinTable(ts[0].Params); {
		case perr == nil && tt.PoolDev == p.poolDev:
			d.ID = tt.ID
			d.Origin = tt.Origin
			active = append(active, d)
		case perr == nil:
			// Another pool's thin device.
		default:
			mine, err := p.hiddenThin(n.Name, ts[0])
			if isErrno(err, unix.ENXIO) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, nil, fmt.Errorf("pool %q: %w", p.cfg.Name, err)
			}
			if mine {
				hidden = append(hidden, d)
			}
		}
	}
	return active, hidden, nil
}

// hiddenThin reports whether name, a thin device whose table t the kernel
// does not show (a failed pool's: "Fail"), is stacked on this pool.
func (p *Pool) hiddenThin(name string, t Target) (bool, error) {
	if t.Type != "thin" || strings.TrimSpace(t.Params) != "Fail" {
		return false, nil
	}
	deps, err := TableDeps(name)
	if err != nil {
		return false, err
	}
	for _, d := range deps {
		if devString(d[0], d[1]) == p.poolDev {
			return true, nil
		}
	}
	return false, nil
}

// ThinStatus reports how much of the active thin device name is mapped.
func (p *Pool) ThinStatus(ctx context.Context, name string) (ThinStatus, error) {
	ts, err := TargetStatus(name)
	if isErrno(err, unix.ENXIO) {
		return ThinStatus{}, fmt.Errorf("thin device %q: %w: %w", name, ErrNotFound, err)
	}
	if err != nil {
		return ThinStatus{}, err
	}
	if len(ts) != 1 || ts[0].Type != "thin" {
		return ThinStatus{}, fmt.Errorf("device %q is not a thin device (status %q): %w", name, tableString(ts), errdefs.ErrInvalidArgument)
	}
	s, err := parseThinStatus(ts[0].Params)
	if err != nil {
		return ThinStatus{}, fmt.Errorf("thin device %q: %w", name, err)
	}
	return s, nil
}

// Discard discards every block of thin device id (size bytes, its
// length) so that the pool frees them and passes the discard down: a
// loop-backed pool's file gets the space back, an SSD gets TRIM. Blocks
// the device shares with a snapshot or origin stay allocated to those.
// The device is activated as name for the discard if it is not active,
// and is inactive afterwards.
//
// A device anyone else holds open is refused with ErrDeviceBusy, and its
// data is kept: discarding it would destroy data in use (a microVM that
// attached Mounts[0].Source). O_EXCL alone does not prove that: it only
// excludes other exclusive openers (mounts, O_EXCL opens), and a VMM opens
// the device without it. So Discard refuses a thin id another dm device
// maps, opens its own device exclusively, removes the /dev/mapper node so
// that nobody can open it by path any more, and only then counts the
// device's openers, which must be exactly its own one.
func (p *Pool) Discard(ctx context.Context, name string, id uint32, size uint64) (retErr error) {
	what := fmt.Sprintf("discard thin %d", id)
	active, err := p.ListActive(ctx)
	if err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	for _, a := range active {
		switch {
		case a.ID != id:
		case a.Name != name:
			// A second activation of the same thin id: whoever uses it
			// would see the discard.
			return fmt.Errorf("pool %q: %s: the device is also active as %s (open count %d): %w",
				p.cfg.Name, what, a.Name, a.OpenCount, ErrDeviceBusy)
		case a.OpenCount > 0:
			return fmt.Errorf("pool %q: %s: %s is open (count %d): %w", p.cfg.Name, what, name, a.OpenCount, ErrDeviceBusy)
		}
	}
	path, err := p.Activate(ctx, name, id, size)
	if err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	defer func() {
		if err := p.Deactivate(ctx, name); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err))
		}
	}()
	if discardActivated != nil {
		discardActivated(path)
	}
	// O_EXCL fails while the device is mounted or claimed by anyone else.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL, 0)
	if isErrno(err, unix.EBUSY) {
		return fmt.Errorf("pool %q: %s: %s: %w: %w", p.cfg.Name, what, path, ErrDeviceBusy, err)
	}
	if err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	defer f.Close()
	// From here no one can open the device by its path; Deactivate (or
	// the next Activate) takes care of the node.
	removeNode(name)
	info, err := GetDeviceInfo(name)
	if err != nil {
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, err)
	}
	if info.OpenCount != 1 {
		return fmt.Errorf("pool %q: %s: %s has %d other opener(s) besides the discard: %w",
			p.cfg.Name, what, name, info.OpenCount-1, ErrDeviceBusy)
	}
	rng := [2]uint64{0, size}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&rng[0]))); errno != 0 {
		return fmt.Errorf("pool %q: %s: BLKDISCARD on %s: %w", p.cfg.Name, what, path, errno)
	}
	return nil
}

// discardActivated, set only by tests, runs when Discard has activated
// the device and before it opens it: the moment a VMM that was handed the
// device's path could open it.
var discardActivated func(path string)

// OpenCount is how many times device name is open; 0 for a device that
// does not exist (not active).
func (p *Pool) OpenCount(name string) (int32, error) {
	info, err := GetDeviceInfo(name)
	if err != nil {
		return 0, fmt.Errorf("pool %q: open count of %s: %w", p.cfg.Name, name, err)
	}
	if !info.Exists {
		return 0, nil
	}
	return info.OpenCount, nil
}
