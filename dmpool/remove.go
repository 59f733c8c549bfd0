package dmpool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/loopdev"
)

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
