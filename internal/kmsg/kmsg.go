// Package kmsg reads the kernel's log from /dev/kmsg, record by record,
// without blocking.
//
// Each read of /dev/kmsg returns one record, "PRI,SEQ,TIME,FLAGS;TEXT\n"
// followed by optional " KEY=VALUE\n" lines (Documentation/ABI/testing/
// dev-kmsg). A reader opened now starts at the oldest record still in the
// kernel's ring buffer; EPIPE says records were overwritten before they
// were read, and the next read goes on with the oldest left. Sequence
// numbers grow by one per record and start again at each boot, which
// BootID tells apart.
package kmsg

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Path is the kernel log device.
const Path = "/dev/kmsg"

// maxRecord bounds one record; the kernel's own limit is about 8 KiB
// (PRINTK_MESSAGE_MAX with its dictionary), and a read into a smaller
// buffer fails with EINVAL.
const maxRecord = 16 << 10

// Record is one kernel log record.
type Record struct {
	Seq uint64
	// Facility is the syslog facility: 0 for the kernel's own
	// messages; what a process writes to /dev/kmsg has another (1,
	// user, unless it says otherwise).
	Facility int
	Message  string // the text, without the prefix and the KEY=VALUE lines
}

// Reader reads records without blocking.
type Reader struct {
	fd  int
	buf []byte
}

// Open opens path (Path outside tests) for reading from the oldest record
// kept.
func Open(path string) (*Reader, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &Reader{fd: fd, buf: make([]byte, maxRecord)}, nil
}

// ReadAvailable calls fn for each record the kernel has now, oldest first,
// at most max of them, and returns how many it read. Records overwritten
// before they were read are skipped (lost reports it). It never waits.
func (r *Reader) ReadAvailable(max int, fn func(Record)) (n int, lost bool, err error) {
	for n < max {
		c, err := unix.Read(r.fd, r.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return n, lost, nil
		case errors.Is(err, unix.EPIPE):
			lost = true
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return n, lost, fmt.Errorf("reading %s: %w", Path, err)
		case c == 0:
			return n, lost, nil
		}
		// One read of /dev/kmsg is one record; a plain file (tests)
		// holds many, each a line with its " KEY=VALUE" lines after it.
		for _, b := range splitRecords(r.buf[:c]) {
			if rec, ok := Parse(b); ok {
				fn(rec)
			}
			n++
		}
	}
	return n, lost, nil
}

// splitRecords cuts b before every line that does not start with a space.
func splitRecords(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i := 0; i < len(b); i++ {
		if b[i] == '\n' && i+1 < len(b) && b[i+1] != ' ' {
			out = append(out, b[start:i+1])
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// Close closes the device.
func (r *Reader) Close() error { return unix.Close(r.fd) }

// Parse reads one record as /dev/kmsg returns it.
func Parse(b []byte) (Record, bool) {
	head, text, ok := bytes.Cut(b, []byte{';'})
	if !ok {
		return Record{}, false
	}
	fields := strings.SplitN(string(head), ",", 4)
	if len(fields) < 3 {
		return Record{}, false
	}
	pri, err := strconv.ParseUint(fields[0], 10, 32)
	if err != nil {
		return Record{}, false
	}
	seq, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return Record{}, false
	}
	if i := bytes.IndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	}
	return Record{Seq: seq, Facility: int(pri >> 3), Message: string(text)}, true
}

// BootID is this boot's random id (/proc/sys/kernel/random/boot_id): the
// sequence numbers of one boot mean nothing in another.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
