package dmpool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Low-level device-mapper operations, one ioctl each. The Pool methods
// compose these; they are exported for diagnostics and the VM harness.

// DeviceInfo is the state of one device-mapper device (DM_DEV_STATUS).
type DeviceInfo struct {
	Name string
	// Exists is false when no device of that name exists; the other
	// fields are then zero.
	Exists bool
	// Active means a live table is loaded.
	Active bool
	// InactiveTable means a table is loaded but not yet resumed.
	InactiveTable bool
	Suspended     bool
	ReadOnly      bool
	OpenCount     int32
	EventNr       uint32
	TargetCount   uint32
	// Dev is the kernel dev_t; Major/Minor split it.
	Dev          uint64
	Major, Minor uint32
}

// DriverVersion returns the device-mapper ioctl interface version of
// the running kernel, e.g. "4.48.0".
func DriverVersion() (string, error) {
	res, err := dmIoctl(unix.DM_VERSION, "", 0, 0, nil)
	if err != nil {
		return "", fmt.Errorf("device-mapper version: %w", err)
	}
	v := res.hdr.Version
	return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]), nil
}

// GetDeviceInfo reports the state of device name. A missing device is
// not an error: Exists is false.
func GetDeviceInfo(name string) (DeviceInfo, error) {
	res, err := dmIoctl(unix.DM_DEV_STATUS, name, 0, 0, nil)
	if err != nil {
		if isErrno(err, unix.ENXIO) {
			return DeviceInfo{Name: name}, nil
		}
		return DeviceInfo{}, fmt.Errorf("device-mapper status of %q: %w", name, err)
	}
	return infoFromHeader(name, &res.hdr), nil
}

func infoFromHeader(name string, h *unix.DmIoctl) DeviceInfo {
	return DeviceInfo{
		Name:          name,
		Exists:        true,
		Active:        h.Flags&unix.DM_ACTIVE_PRESENT_FLAG != 0,
		InactiveTable: h.Flags&unix.DM_INACTIVE_PRESENT_FLAG != 0,
		Suspended:     h.Flags&unix.DM_SUSPEND_FLAG != 0,
		ReadOnly:      h.Flags&unix.DM_READONLY_FLAG != 0,
		OpenCount:     h.Open_count,
		EventNr:       h.Event_nr,
		TargetCount:   h.Target_count,
		Dev:           h.Dev,
		Major:         unix.Major(h.Dev),
		Minor:         unix.Minor(h.Dev),
	}
}

// CreateDevice creates an empty (table-less) device and its
// /dev/mapper node. EEXIST is returned wrapped when the name is taken.
func CreateDevice(name string) (DeviceInfo, error) {
	res, err := dmIoctl(unix.DM_DEV_CREATE, name, 0, 0, nil)
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("create device-mapper device %q: %w", name, err)
	}
	info := infoFromHeader(name, &res.hdr)
	if err := makeNode(name, info.Dev); err != nil {
		return info, err
	}
	return info, nil
}

// LoadTable loads targets as the inactive table of name; Resume makes
// it live.
func LoadTable(name string, targets []Target) error {
	_, err := dmIoctlCount(unix.DM_TABLE_LOAD, name, 0, 0, uint32(len(targets)), marshalTargets(targets))
	if err != nil {
		return fmt.Errorf("load table %q into %q: %w", tableString(targets), name, err)
	}
	return nil
}

// ClearTable drops the inactive table loaded into name (DM_TABLE_CLEAR),
// so that no later resume swaps it in. The live table is not touched.
func ClearTable(name string) error {
	if _, err := dmIoctl(unix.DM_TABLE_CLEAR, name, 0, 0, nil); err != nil {
		return fmt.Errorf("clear inactive table of %q: %w", name, err)
	}
	return nil
}

// Suspend suspends name, flushing outstanding IO (and freezing a file
// system mounted on it).
func Suspend(name string) error {
	if _, err := dmIoctl(unix.DM_DEV_SUSPEND, name, unix.DM_SUSPEND_FLAG, 0, nil); err != nil {
		return fmt.Errorf("suspend %q: %w", name, err)
	}
	return nil
}

// Resume resumes name, swapping in a loaded inactive table if any.
func Resume(name string) error {
	if _, err := dmIoctl(unix.DM_DEV_SUSPEND, name, 0, 0, nil); err != nil {
		return fmt.Errorf("resume %q: %w", name, err)
	}
	return nil
}

// resumeSkipLockfs is Resume for a device that may have an inactive table
// to swap in: the suspend the kernel does first then skips freezing a file
// system mounted on the device (DM_SKIP_LOCKFS_FLAG). It still waits for
// in-flight I/O (no DM_NOFLUSH_FLAG).
func resumeSkipLockfs(name string) error {
	if _, err := dmIoctl(unix.DM_DEV_SUSPEND, name, unix.DM_SKIP_LOCKFS_FLAG, 0, nil); err != nil {
		return fmt.Errorf("resume %q: %w", name, err)
	}
	return nil
}

// Message sends a target message (sector 0), e.g. "create_thin 5" to a
// thin-pool, and returns the target's reply, if any.
func Message(name, msg string) (string, error) {
	payload := make([]byte, 8+len(msg)+1)
	binary.NativeEndian.PutUint64(payload, 0)
	copy(payload[8:], msg)
	res, err := dmIoctl(unix.DM_TARGET_MSG, name, 0, 0, payload)
	if err != nil {
		return "", fmt.Errorf("message %q to %q: %w", msg, name, err)
	}
	if res.hdr.Flags&unix.DM_DATA_OUT_FLAG != 0 {
		return cString(res.data), nil
	}
	return "", nil
}

// RemoveDevice removes name and its /dev/mapper node. With deferred
// the kernel removes a busy device on last close instead of failing
// with EBUSY.
func RemoveDevice(name string, deferred bool) error {
	var flags uint32
	if deferred {
		flags = unix.DM_DEFERRED_REMOVE
	}
	if _, err := dmIoctl(unix.DM_DEV_REMOVE, name, flags, 0, nil); err != nil {
		return fmt.Errorf("remove device-mapper device %q: %w", name, err)
	}
	removeNode(name)
	return nil
}

// Table returns the live table of name.
func Table(name string) ([]Target, error) {
	return tableStatus(name, unix.DM_STATUS_TABLE_FLAG, "table")
}

// TargetStatus returns the status lines of name's live table. For a
// thin-pool the kernel first commits the pool metadata, so the numbers
// are durable ones.
func TargetStatus(name string) ([]Target, error) {
	return tableStatus(name, 0, "status")
}

// targetStatusNoFlush is TargetStatus without the metadata commit a
// thin-pool makes for it (DM_NOFLUSH_FLAG on DM_TABLE_STATUS). That
// commit is a synchronous write of the pool's metadata, about as costly
// as the create_snap it would precede.
func targetStatusNoFlush(name string) ([]Target, error) {
	return tableStatus(name, unix.DM_NOFLUSH_FLAG, "status")
}

// statusInfoFlush and statusInfoNoFlush are TargetStatus and
// targetStatusNoFlush with the reply header's device state (its event
// counter).
func statusInfoFlush(name string) ([]Target, DeviceInfo, error) {
	return tableStatusInfo(name, 0, "status")
}

func statusInfoNoFlush(name string) ([]Target, DeviceInfo, error) {
	return tableStatusInfo(name, unix.DM_NOFLUSH_FLAG, "status")
}

func tableStatus(name string, flags uint32, what string) ([]Target, error) {
	t, _, err := tableStatusInfo(name, flags, what)
	return t, err
}

// tableStatusInfo also returns the device state the kernel puts in the
// reply header (flags, open count), which saves a DM_DEV_STATUS.
func tableStatusInfo(name string, flags uint32, what string) ([]Target, DeviceInfo, error) {
	res, err := dmIoctl(unix.DM_TABLE_STATUS, name, flags, 0, nil)
	if err != nil {
		return nil, DeviceInfo{}, fmt.Errorf("%s of %q: %w", what, name, err)
	}
	t, err := unmarshalTargets(res.data, res.hdr.Target_count)
	if err != nil {
		return nil, DeviceInfo{}, fmt.Errorf("%s of %q: %w", what, name, err)
	}
	return t, infoFromHeader(name, &res.hdr), nil
}

// TableDeps returns the devices (major, minor) the live table of name
// uses. The kernel answers it from the table itself, also when the
// target's status hides its parameters (a failed pool's thin devices).
func TableDeps(name string) ([][2]uint32, error) { return tableDeps(name, 0, false) }

// DevicesUsing returns the device-mapper devices whose tables, live or
// loaded and not yet resumed, use block device major:minor. Whoever
// reuses a device number for other content asks it first: a table still
// naming the number would read the new content as its own.
func DevicesUsing(major, minor uint32) ([]string, error) {
	names, err := ListDevices()
	if err != nil {
		return nil, err
	}
	var users []string
	for _, n := range names {
		for _, flags := range []uint32{0, unix.DM_QUERY_INACTIVE_TABLE_FLAG} {
			deps, err := tableDeps(n.Name, flags, true)
			if isErrno(err, unix.ENXIO) {
				break // removed meanwhile
			}
			if err != nil {
				return nil, err
			}
			if slices.Contains(deps, [2]uint32{major, minor}) {
				users = append(users, n.Name)
				break
			}
		}
	}
	return users, nil
}

// tableDeps: noTable says a device without that table (the kernel sends
// no deps at all) has none, rather than failing.
func tableDeps(name string, flags uint32, noTable bool) ([][2]uint32, error) {
	res, err := dmIoctl(unix.DM_TABLE_DEPS, name, flags, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("dependencies of %q: %w", name, err)
	}
	if noTable && len(res.data) == 0 {
		return nil, nil
	}
	deps, err := unmarshalDeps(res.data)
	if err != nil {
		return nil, fmt.Errorf("dependencies of %q: %w", name, err)
	}
	return deps, nil
}

// unmarshalDeps parses struct dm_target_deps: a count, padding, and
// count dev_t values encoded as the kernel's huge_encode_dev.
func unmarshalDeps(data []byte) ([][2]uint32, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("device-mapper deps reply of %d bytes", len(data))
	}
	n := binary.NativeEndian.Uint32(data)
	if uint64(len(data)) < 8+uint64(n)*8 {
		return nil, fmt.Errorf("device-mapper deps reply of %d bytes for %d devices", len(data), n)
	}
	out := make([][2]uint32, n)
	for i := range out {
		d := binary.NativeEndian.Uint64(data[8+8*i:])
		out[i] = [2]uint32{unix.Major(d), unix.Minor(d)}
	}
	return out, nil
}

// ListDevices returns the names and dev_t of all device-mapper devices.
func ListDevices() ([]DeviceName, error) {
	res, err := dmIoctl(unix.DM_LIST_DEVICES, "", 0, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("list device-mapper devices: %w", err)
	}
	return unmarshalNameList(res.data)
}

// DevicePath is where the node of device name lives.
func DevicePath(name string) string { return filepath.Join(mapperDir, name) }

// makeNode creates /dev/mapper/<name> for dev (there is no udev to do
// it). A stale node of another dev_t, left by a crash, is replaced.
func makeNode(name string, dev uint64) error {
	path := DevicePath(name)
	if err := os.MkdirAll(mapperDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", mapperDir, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && uint64(st.Rdev) == dev {
			return nil
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("replace stale node %s: %w", path, err)
		}
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(dev)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create node %s (%d:%d): %w", path, unix.Major(dev), unix.Minor(dev), err)
	}
	return nil
}

func removeNode(name string) {
	_ = os.Remove(DevicePath(name))
}
