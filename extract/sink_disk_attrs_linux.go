package extract

import (
	"archive/tar"
	"errors"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func mode(h *tar.Header) uint32 { return uint32(h.Mode) & 0o7777 }

func times(h *tar.Header) [2]unix.Timespec {
	mt := h.ModTime
	at := h.AccessTime
	if at.IsZero() {
		at = mt
	}
	return [2]unix.Timespec{timespec(at), timespec(mt)}
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Sec: 0}
	}
	// Not UnixNano: it overflows past 2262, and archives can say anything.
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// chown applies the entry's owner. A caller that is not root cannot give
// files away; that is reported once through Warn and otherwise ignored,
// so tests and rootless validation runs work. As root every failure is an
// error: a root filesystem with the wrong owners is a broken image.
func (s *diskSink) chown(e *entry, do func(uid, gid int) error) error {
	err := do(e.hdr.Uid, e.hdr.Gid)
	if err == nil {
		return nil
	}
	if (s.euid != 0 || s.opts.IgnoreChownErrors) && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL)) {
		if !s.warnedChown {
			s.warnedChown = true
			s.opts.warn("cannot change ownership, keeping the caller's (first: %s wants %d:%d: %v)", e.name, e.hdr.Uid, e.hdr.Gid, err)
		}
		return nil
	}
	return opErr("chown", e.name, err)
}

// xattrs sets the entry's PAX SCHILY.xattr.* records on an open fd, after
// chown (which clears security.capability) and chmod.
func (s *diskSink) xattrs(e *entry, fd int) error {
	for k, v := range e.hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(key, "trusted.") {
			// trusted.* belongs to the host (overlayfs keeps its own
			// state there); an image must not be able to forge it.
			s.opts.warn("skipping xattr %s on %s", key, e.name)
			continue
		}
		err := unix.Fsetxattr(fd, key, []byte(v), 0)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) || (s.euid != 0 && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES))) {
			s.opts.warn("cannot set xattr %s on %s: %v", key, e.name, err)
			continue
		}
		return opErr("set xattr "+key+" on", e.name, err)
	}
	return nil
}

func hasXattrs(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			return true
		}
	}
	return false
}
