package dmpool

import (
	"fmt"
	"os"
	"path/filepath"
)

// The kernel's log names block devices by their kernel names ("dm-3",
// "loop1", "nvme0n1p2"), not by device-mapper names. These say which
// kernel names are the pool's, so that an I/O error the kernel logs can be
// told to be ours (snapshotter/kernellog.go).

// KernelName is the kernel's name of device-mapper device name, "dm-N",
// or "" when no such device exists.
func KernelName(name string) (string, error) {
	info, err := GetDeviceInfo(name)
	if err != nil || !info.Exists {
		return "", err
	}
	return fmt.Sprintf("dm-%d", info.Minor), nil
}

// KernelName is the kernel's name of the pool's thin device name, "" when
// it is not active.
func (p *Pool) KernelName(name string) (string, error) { return KernelName(name) }

// BlockDevices are the kernel names of the pool device and of the data and
// metadata devices its table uses (loop devices for file-backed pools).
func (p *Pool) BlockDevices() ([]string, error) {
	self, err := KernelName(p.cfg.Name)
	if err != nil {
		return nil, err
	}
	if self == "" {
		return nil, fmt.Errorf("pool %q: %w", p.cfg.Name, ErrNotFound)
	}
	deps, err := TableDeps(p.cfg.Name)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{self: true}
	out := []string{self}
	for _, d := range deps {
		// /sys/dev/block/MAJ:MIN links to the device's directory,
		// whose base name is the kernel name.
		link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", d[0], d[1]))
		if err != nil {
			return nil, fmt.Errorf("pool %q: kernel name of its device %d:%d: %w", p.cfg.Name, d[0], d[1], err)
		}
		out = below(filepath.Base(link), out, seen, 0)
	}
	return out, nil
}

// below adds name and the devices it sits on: the disk of a partition (the
// block layer's errors name the disk, "nvme0n1", not "nvme0n1p3") and
// the devices under a stacked one (/sys/class/block/X/slaves: LVM, a
// flakey or crypt device), as far as 8 levels down.
func below(name string, out []string, seen map[string]bool, depth int) []string {
	if seen[name] || depth > 8 {
		return out
	}
	seen[name] = true
	out = append(out, name)
	dir := filepath.Join("/sys/class/block", name)
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			out = below(filepath.Base(filepath.Dir(real)), out, seen, depth+1)
		}
	}
	slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
	for _, sl := range slaves {
		out = below(sl.Name(), out, seen, depth+1)
	}
	return out
}
