package nbd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The classic ioctl interface (include/uapi/linux/nbd.h): _IO(0xab, n).
const (
	ioctlSetSock    = 0xab00
	ioctlSetBlksize = 0xab01
	ioctlSetSize    = 0xab02
	ioctlDoIt       = 0xab03
	ioctlClearSock  = 0xab04
	ioctlDisconnect = 0xab08
	ioctlSetTimeout = 0xab09
	ioctlSetFlags   = 0xab0a

	flagHasFlags = 1 << 0
	flagReadOnly = 1 << 1
)

func ioctl(fd uintptr, req, arg uintptr) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, arg)
	if e != 0 {
		return e
	}
	return nil
}

var (
	sysBlock  = "/sys/block"
	sysModule = "/sys/module/nbd"
	devDir    = "/dev"
)

var (
	modMu    sync.Mutex
	modTried bool
)

// ensureModule loads nbd.ko (once per process) when the kernel does not
// have it yet. Built-in nbd also shows up in /sys/module (it has
// parameters), so only a kernel without it at all fails here.
func ensureModule() error {
	if _, err := os.Stat(sysModule); err == nil {
		return nil
	}
	modMu.Lock()
	defer modMu.Unlock()
	if _, err := os.Stat(sysModule); err == nil {
		return nil
	}
	if modTried {
		return fmt.Errorf("nbd: %s is absent: the nbd kernel module is not loaded (an earlier `modprobe nbd` failed)", sysModule)
	}
	modTried = true
	out, err := exec.Command("modprobe", "nbd").CombinedOutput()
	if err != nil {
		return fmt.Errorf("nbd: %s is absent and `modprobe nbd` failed (the kernel needs CONFIG_BLK_DEV_NBD): %w: %s",
			sysModule, err, bytes.TrimSpace(out))
	}
	if _, err := os.Stat(sysModule); err != nil {
		return fmt.Errorf("nbd: `modprobe nbd` succeeded but %s is still absent", sysModule)
	}
	return nil
}

// candidates lists the nbd device indexes the kernel has, in order.
func candidates() ([]int, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("nbd: list %s: %w", sysBlock, err)
	}
	var idx []int
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "nbd")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(rest); err == nil {
			idx = append(idx, n)
		}
	}
	if len(idx) == 0 {
		return nil, fmt.Errorf("nbd: the nbd module is loaded but %s has no nbd devices (nbds_max=0?)", sysBlock)
	}
	sort.Ints(idx)
	return idx, nil
}

// inUse reports whether device n looks taken: connected (the pid file
// exists only while NBD_DO_IT runs) or being set up (a size is set).
// Both are only hints, another process can race; NBD_SET_SOCK's EBUSY
// is the real arbiter.
func inUse(n int) bool {
	dir := filepath.Join(sysBlock, "nbd"+strconv.Itoa(n))
	if _, err := os.Stat(filepath.Join(dir, "pid")); err == nil {
		return true
	}
	sectors, err := readUint(filepath.Join(dir, "size"))
	return err != nil || sectors != 0
}

// usable reports whether Connect may take device n: not in use, and
// its number named by no table, so that nothing reads what this process
// serves on it but the tables made after it is connected.
func usable(n int, opt Options) (bool, error) {
	if inUse(n) {
		return false, nil
	}
	dir := filepath.Join(sysBlock, "nbd"+strconv.Itoa(n))
	holders, err := os.ReadDir(filepath.Join(dir, "holders"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("nbd: %w", err)
	}
	if len(holders) > 0 {
		return false, nil // a dm table (or another stacked device) still has it open
	}
	if opt.Referenced == nil {
		return true, nil
	}
	major, minor, err := devNumber(n)
	if err != nil {
		return false, err
	}
	used, err := opt.Referenced(major, minor)
	if err != nil {
		return false, fmt.Errorf("nbd: is nbd%d (%d:%d) named by a table: %w", n, major, minor, err)
	}
	return !used, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// sizeOf returns device n's size in bytes as the kernel reports it.
func sizeOf(n int) (int64, error) {
	s, err := readUint(filepath.Join(sysBlock, "nbd"+strconv.Itoa(n), "size"))
	return int64(s) * 512, err
}

func connected(n int) bool {
	_, err := os.Stat(filepath.Join(sysBlock, "nbd"+strconv.Itoa(n), "pid"))
	return err == nil
}

// ensureNode returns /dev/nbdN, creating the node from sysfs's major:minor
// when it is missing (there is no udev on the target machines).
func ensureNode(n int) (path string, major, minor uint32, err error) {
	name := "nbd" + strconv.Itoa(n)
	major, minor, err = devNumber(n)
	if err != nil {
		return "", 0, 0, err
	}
	path = filepath.Join(devDir, name)
	want := unix.Mkdev(major, minor)
	var st unix.Stat_t
	err = unix.Stat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Mknod(path, unix.S_IFBLK|0o600, int(want))
		if errors.Is(err, unix.EEXIST) {
			err = unix.Stat(path, &st)
		} else if err == nil {
			return path, major, minor, nil
		}
	}
	if err != nil {
		return "", 0, 0, fmt.Errorf("nbd: device node %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != want {
		return "", 0, 0, fmt.Errorf("nbd: %s is not block device %d:%d", path, major, minor)
	}
	return path, major, minor, nil
}

// devNumber is device n's major:minor from sysfs.
func devNumber(n int) (major, minor uint32, err error) {
	name := "nbd" + strconv.Itoa(n)
	b, err := os.ReadFile(filepath.Join(sysBlock, name, "dev"))
	if err != nil {
		return 0, 0, fmt.Errorf("nbd: %w", err)
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("nbd: %s/%s/dev: unexpected %q", sysBlock, name, b)
	}
	return uint32(ma), uint32(mi), nil
}

// blockSignals blocks every signal on the calling (locked) OS thread.
// NBD_DO_IT waits interruptibly: any signal the process gets that lands
// on this thread (SIGCHLD, SIGURG, SIGPIPE...) would make the kernel shut
// the connection down. SIGKILL cannot be blocked, which is what lets a
// killed process still release the device.
func blockSignals() error {
	var all unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	return unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil)
}
