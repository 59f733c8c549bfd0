package extract

import (
	"encoding/binary"
	"fmt"
)

// POSIX ACLs travel as the xattrs system.posix_acl_access and
// system.posix_acl_default, in the kernel's binary form (what
// containerd's and buildkit's tar writers copy from listxattr). fsetxattr
// parses and checks them (posix_acl_from_xattr, posix_acl_valid,
// set_posix_acl) and fails with EINVAL, EOPNOTSUPP or EACCES, as root or
// not, so checkACL applies the same rules for Validate and Extract alike.
const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"

	aclVersion = 2 // POSIX_ACL_XATTR_VERSION

	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	aclPerms = 0o7 // ACL_READ|ACL_WRITE|ACL_EXECUTE
)

// checkACL returns why the ACL value v is one the kernel refuses, or "".
// The value is a little-endian 4-byte header (the version, 2) and 8-byte
// entries {tag uint16, perm uint16, id uint32}, in the order
// posix_acl_valid requires: USER_OBJ, USER..., GROUP_OBJ, GROUP...,
// MASK (required when there are USER or GROUP entries), OTHER, each of
// the four at most and at least once. A header alone (or an empty value)
// removes the ACL, which is always allowed. A default ACL on anything but
// a directory is EACCES. The id of a USER or GROUP entry is a uid or gid
// and follows their rule (0..4294967294): 4294967295 is (uid_t)-1, which
// make_kuid refuses. (Ids outside the caller's user namespace are
// refused by the kernel too; Validate cannot know the namespace.)
func checkACL(v string, isDefault, isDir bool) string {
	if len(v) == 0 {
		return ""
	}
	if len(v) < 4 {
		return fmt.Sprintf("%d bytes, shorter than the 4-byte header", len(v))
	}
	b := []byte(v)
	if ver := binary.LittleEndian.Uint32(b); ver != aclVersion {
		return fmt.Sprintf("version %d (want %d)", ver, aclVersion)
	}
	if (len(b)-4)%8 != 0 {
		return fmt.Sprintf("%d bytes, not a 4-byte header and 8-byte entries", len(b))
	}
	n := (len(b) - 4) / 8
	if n == 0 {
		return ""
	}
	if isDefault && !isDir {
		return "a default ACL on a non-directory"
	}
	// The states of posix_acl_valid: what may come next.
	const (
		wantUserObj = iota
		inUsers
		inGroups
		wantOther
		done
	)
	state, needsMask := wantUserObj, false
	for i := range n {
		e := b[4+8*i:]
		tag := binary.LittleEndian.Uint16(e)
		perm := binary.LittleEndian.Uint16(e[2:])
		id := binary.LittleEndian.Uint32(e[4:])
		if perm&^aclPerms != 0 {
			return fmt.Sprintf("entry %d: permissions %#o (allowed rwx, 0..7)", i, perm)
		}
		ok := false
		switch tag {
		case aclUserObj:
			ok, state = state == wantUserObj, inUsers
		case aclUser:
			ok, needsMask = state == inUsers, true
		case aclGroupObj:
			ok, state = state == inUsers, inGroups
		case aclGroup:
			ok, needsMask = state == inGroups, true
		case aclMask:
			ok, state = state == inGroups, wantOther
		case aclOther:
			ok = state == wantOther || (state == inGroups && !needsMask)
			state = done
		default:
			return fmt.Sprintf("entry %d: unknown tag %#x", i, tag)
		}
		if !ok {
			return fmt.Sprintf("entry %d: tag %#x out of order (want USER_OBJ, USER..., GROUP_OBJ, GROUP..., MASK, OTHER, MASK required with USER or GROUP entries)", i, tag)
		}
		if (tag == aclUser || tag == aclGroup) && int64(id) > maxID {
			return fmt.Sprintf("entry %d: id %d (allowed 0..%d)", i, id, int64(maxID))
		}
	}
	if state != done {
		return "no OTHER entry (want USER_OBJ, GROUP_OBJ and OTHER)"
	}
	return ""
}
