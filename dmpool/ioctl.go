package dmpool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file speaks the device-mapper ioctl protocol on
// /dev/mapper/control: a struct dm_ioctl header followed by a
// command-specific payload in one buffer. Nothing here forks dmsetup.

const (
	controlPath = "/dev/mapper/control"
	mapperDir   = "/dev/mapper"

	headerSize = unix.SizeofDmIoctl      // 312
	specSize   = unix.SizeofDmTargetSpec // 40

	// initialBufferSize fits the status of a few hundred devices; the
	// kernel sets DM_BUFFER_FULL_FLAG when it needs more and we retry.
	initialBufferSize = 16 << 10
	maxBufferSize     = 16 << 20
)

// Target is one line of a device-mapper table (or of its status).
type Target struct {
	Start  uint64 // sectors
	Length uint64 // sectors
	Type   string // "thin-pool", "thin", ...
	Params string // table parameters or status text
}

var (
	controlMu   sync.Mutex
	controlFile *os.File
)

// control returns the shared handle on /dev/mapper/control. ioctls on
// it are independent, so one handle serves all goroutines.
func control() (*os.File, error) {
	controlMu.Lock()
	defer controlMu.Unlock()
	if controlFile != nil {
		return controlFile, nil
	}
	f, err := os.OpenFile(controlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, controlOpenError(controlPath, err)
	}
	controlFile = f
	return f, nil
}

// controlOpenError says why path (the control device) would not open and
// what to do, naming the path once.
func controlOpenError(path string, err error) error {
	cause := err
	var pe *os.PathError
	if errors.As(err, &pe) {
		cause = pe.Err
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist. Load the kernel modules with 'modprobe dm_thin_pool' "+
			"(it pulls in dm_mod; 'lsmod | grep dm_thin_pool' checks), and in a container pass the host's /dev/mapper in: %w",
			ErrNoDeviceMapper, path, cause)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: opening %s: %w: device-mapper needs root (run as root, e.g. with sudo)", ErrNoDeviceMapper, path, cause)
	}
	return fmt.Errorf("%w: opening %s: %w", ErrNoDeviceMapper, path, cause)
}

// dmResult is what the kernel wrote back.
type dmResult struct {
	hdr  unix.DmIoctl
	data []byte // bytes from data_start to data_size
}

// dmIoctl runs one device-mapper command. name may be empty for
// commands that take none. payload is copied after the header.
func dmIoctl(cmd uintptr, name string, flags uint32, dev uint64, payload []byte) (*dmResult, error) {
	return dmIoctlCount(cmd, name, flags, dev, 0, payload)
}

// dmIoctlCount is dmIoctl with a target count, for DM_TABLE_LOAD.
func dmIoctlCount(cmd uintptr, name string, flags uint32, dev uint64, count uint32, payload []byte) (*dmResult, error) {
	if len(name) >= unix.DM_NAME_LEN {
		return nil, fmt.Errorf("device-mapper name %q longer than %d bytes", name, unix.DM_NAME_LEN-1)
	}
	f, err := control()
	if err != nil {
		return nil, err
	}
	size := initialBufferSize
	if n := headerSize + len(payload) + 8; n > size {
		size = n
	}
	for {
		buf := marshalHeader(size, name, flags, dev, count, payload)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0])))
		runtime.KeepAlive(buf)
		if errno != 0 {
			return nil, errno
		}
		res, full := unmarshalResult(buf)
		if full && size < maxBufferSize {
			size *= 4
			continue
		}
		return res, nil
	}
}

func marshalHeader(size int, name string, flags uint32, dev uint64, count uint32, payload []byte) []byte {
	// make() of this size is 8-byte aligned, which dm_ioctl needs.
	buf := make([]byte, size)
	h := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	h.Version = [3]uint32{unix.DM_VERSION_MAJOR, 0, 0}
	h.Data_size = uint32(size)
	h.Data_start = headerSize
	h.Flags = flags
	h.Dev = dev
	h.Target_count = count
	copy(h.Name[:len(h.Name)-1], name)
	copy(buf[headerSize:], payload)
	return buf
}

func unmarshalResult(buf []byte) (*dmResult, bool) {
	h := *(*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	res := &dmResult{hdr: h}
	full := h.Flags&unix.DM_BUFFER_FULL_FLAG != 0
	start, end := int(h.Data_start), int(h.Data_size)
	if end > len(buf) {
		end = len(buf)
	}
	if start >= headerSize && start < end {
		res.data = append([]byte(nil), buf[start:end]...)
	}
	return res, full
}

// marshalTargets lays out dm_target_spec records for DM_TABLE_LOAD.
// For input the kernel reads spec.next as the offset from this spec to
// the following one.
func marshalTargets(targets []Target) []byte {
	var out []byte
	for i, t := range targets {
		params := append([]byte(t.Params), 0)
		recLen := align8(specSize + len(params))
		rec := make([]byte, recLen)
		binary.NativeEndian.PutUint64(rec[0:], t.Start)
		binary.NativeEndian.PutUint64(rec[8:], t.Length)
		// status (int32) at 16 stays 0
		if i < len(targets)-1 {
			binary.NativeEndian.PutUint32(rec[20:], uint32(recLen))
		}
		copy(rec[24:24+unix.DM_MAX_TYPE_NAME-1], t.Type)
		copy(rec[specSize:], params)
		out = append(out, rec...)
	}
	return out
}

// unmarshalTargets parses the output of DM_TABLE_STATUS. For output the
// kernel writes spec.next as an offset from the start of the data area.
func unmarshalTargets(data []byte, count uint32) ([]Target, error) {
	var out []Target
	off := 0
	for i := uint32(0); i < count; i++ {
		if off+specSize > len(data) {
			return nil, fmt.Errorf("device-mapper table: target %d outside the %d byte result", i, len(data))
		}
		rec := data[off:]
		t := Target{
			Start:  binary.NativeEndian.Uint64(rec[0:]),
			Length: binary.NativeEndian.Uint64(rec[8:]),
			Type:   cString(rec[24 : 24+unix.DM_MAX_TYPE_NAME]),
			Params: cString(rec[specSize:]),
		}
		out = append(out, t)
		next := int(binary.NativeEndian.Uint32(rec[20:]))
		if next <= off && i < count-1 {
			return nil, fmt.Errorf("device-mapper table: bad next offset %d after target %d", next, i)
		}
		off = next
	}
	return out, nil
}

// DeviceName is one device of DM_LIST_DEVICES: its name and dev_t.
type DeviceName struct {
	Name string
	Dev  uint64
}

// unmarshalNameList parses DM_LIST_DEVICES output: records of
// {dev u64, next u32, name[]}, next relative to the record, 0 ends.
func unmarshalNameList(data []byte) ([]DeviceName, error) {
	var out []DeviceName
	off := 0
	for {
		if off+12 > len(data) {
			if off == 0 {
				return nil, nil
			}
			return nil, fmt.Errorf("device-mapper name list truncated at offset %d", off)
		}
		dev := binary.NativeEndian.Uint64(data[off:])
		next := int(binary.NativeEndian.Uint32(data[off+8:]))
		if dev == 0 && off == 0 {
			return nil, nil // no devices at all
		}
		out = append(out, DeviceName{Name: cString(data[off+12:]), Dev: dev})
		if next == 0 {
			return out, nil
		}
		off += next
	}
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func align8(n int) int { return (n + 7) &^ 7 }

// isErrno reports whether err carries errno e.
func isErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }
