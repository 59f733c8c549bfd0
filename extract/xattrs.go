package extract

import (
	"archive/tar"
	"encoding/binary"
	"strings"
)

// Limits on one entry's xattrs (its PAX SCHILY.xattr.* records, its own
// and those of global headers in force). Validate and Extract check them
// in the same place, before the entry is acted on, so both refuse the
// same archives with the same message; otherwise only Extract met the
// kernel's limits (E2BIG, ERANGE, EINVAL from fsetxattr) and Validate
// passed what Extract then failed. They are the VFS's, which no
// filesystem raises, and a count that keeps the syscalls per entry
// bounded (a 1 MiB PAX header holds 50,000 tiny records). Real images
// carry a few: security.capability, security.selinux, user.*.
const (
	maxXattrs     = 128      // per entry
	maxXattrName  = 255      // XATTR_NAME_MAX
	maxXattrValue = 64 << 10 // XATTR_SIZE_MAX
	maxXattrTotal = 64 << 10 // names and values of one entry (XATTR_LIST_MAX bounds the names alone)
)

const xattrPrefix = "SCHILY.xattr."

// xattrNamespaces are the prefixes the kernel knows; a name that is one
// of them and nothing more is EINVAL to fsetxattr. (Names in no known
// namespace are EOPNOTSUPP, which Extract skips with a warning.)
var xattrNamespaces = []string{"security.", "system.", "trusted.", "user."}

func checkXattrs(name string, hdr *tar.Header) error {
	count, total := 0, 0
	for k, v := range hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		count++
		total += len(key) + len(v)
		switch {
		case key == "":
			return entryErr(ErrInvalidXattr, name, ": empty name")
		case len(key) > maxXattrName:
			return entryErr(ErrInvalidXattr, name, ": name of %d bytes (max %d)", len(key), maxXattrName)
		case len(v) > maxXattrValue:
			return entryErr(ErrInvalidXattr, name, ": %s: value of %d bytes (max %d)", printable(key), len(v), maxXattrValue)
		}
		if key == "security.capability" && !validCapability(v) {
			return entryErr(ErrInvalidXattr, name, ": security.capability: %d bytes that are no v2 (20 bytes) or v3 (24 bytes) capability set", len(v))
		}
		if key == aclAccess || key == aclDefault {
			if why := checkACL(v, key == aclDefault, hdr.Typeflag == tar.TypeDir); why != "" {
				return entryErr(ErrInvalidXattr, name, ": %s: %s", key, why)
			}
		}
		for _, ns := range xattrNamespaces {
			if key == ns {
				return entryErr(ErrInvalidXattr, name, ": %q (no name after the namespace)", key)
			}
		}
	}
	if count > maxXattrs {
		return entryErr(ErrInvalidXattr, name, ": %d xattrs (max %d)", count, maxXattrs)
	}
	if total > maxXattrTotal {
		return entryErr(ErrInvalidXattr, name, ": names and values total %d bytes (max %d)", total, maxXattrTotal)
	}
	return nil
}

// validCapability is the kernel's check of a security.capability value
// (validheader in cap_convert_nscap), which fails fsetxattr with EINVAL,
// as root or not: a v2 set of 20 bytes or a v3 one of 24, by the revision
// in the first little-endian word, which must be exactly the revision
// with at most the effective bit set (is_v2header/is_v3header).
func validCapability(v string) bool {
	if len(v) < 4 {
		return false
	}
	magic := binary.LittleEndian.Uint32([]byte(v[:4])) &^ 1
	return (len(v) == 20 && magic == 0x02000000) || (len(v) == 24 && magic == 0x03000000)
}
