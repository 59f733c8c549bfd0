package extract

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// acl builds a POSIX ACL xattr value in the kernel's form: the version,
// then {tag, perm, id} entries, little-endian.
func acl(version uint32, entries ...[3]uint32) string {
	b := binary.LittleEndian.AppendUint32(nil, version)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return string(b)
}

// What `setfacl -m u:1234:rwx,g:5678:rx` leaves on a 0640 file (which
// then shows as 0670: the group bits are the mask), as
// getfattr shows it: the owner, a named user, the owning group, a named
// group, the mask, others.
var (
	aclUserObjRW = [3]uint32{aclUserObj, 6, ^uint32(0)}
	aclGroupObjR = [3]uint32{aclGroupObj, 4, ^uint32(0)}
	aclOtherNone = [3]uint32{aclOther, 0, ^uint32(0)}
	aclMaskRWX   = [3]uint32{aclMask, 7, ^uint32(0)}
	realACL      = acl(2, aclUserObjRW, [3]uint32{aclUser, 7, 1234}, aclGroupObjR, [3]uint32{aclGroup, 5, 5678}, aclMaskRWX, aclOtherNone)
)

func hasACL(name, key, want string) func(*testing.T, *sandbox, Result) {
	return func(t *testing.T, s *sandbox, _ Result) {
		buf := make([]byte, 1024)
		n, err := unix.Lgetxattr(filepath.Join(s.root, name), key, buf)
		if err != nil {
			t.Fatalf("%s: getxattr %s: %v", name, key, err)
		}
		if string(buf[:n]) != want {
			t.Errorf("%s: %s = %x, want %x", name, key, buf[:n], want)
		}
	}
}

// aclCases: system.posix_acl_access and system.posix_acl_default went to
// fsetxattr unchecked, so a value the kernel refuses (EINVAL, EOPNOTSUPP,
// EACCES for a default ACL on a file) passed Validate and failed (or, as
// non-root, was skipped by) Extract. checkACL applies the kernel's rules
// for both.
func aclCases() []hostileCase {
	const access, def = xattrPrefix + aclAccess, xattrPrefix + aclDefault
	minimal := acl(2, aclUserObjRW, aclGroupObjR, aclOtherNone)
	return []hostileCase{
		{
			name:   "acl-access-real-kept",
			layers: one(file("f", "x").mode(0o670).pax(access, realACL)),
			check:  hasACL("f", aclAccess, realACL),
		},
		{
			name:   "acl-default-on-a-directory-kept",
			layers: one(dir("d/").pax(def, realACL), file("d/f", "x")),
			check:  hasACL("d", aclDefault, realACL),
		},
		{
			// Three entries, equivalent to the mode: the kernel takes it
			// (and keeps no xattr, the mode says it all).
			name:   "acl-access-minimal-ok",
			layers: one(file("f", "x").pax(access, minimal)),
		},
		{
			name:   "acl-header-only-removes-ok",
			layers: one(file("f", "x").pax(access, acl(2)), file("g", "x").pax(def, acl(2))),
		},
		{
			name:    "acl-default-on-a-file",
			layers:  one(file("f", "x").pax(def, realACL)),
			wantErr: ErrInvalidXattr, wantMsg: []string{"f: system.posix_acl_default: a default ACL on a non-directory"},
		},
		{
			name:    "acl-version-1",
			layers:  one(file("f", "x").pax(access, acl(1, aclUserObjRW, aclGroupObjR, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"f: system.posix_acl_access: version 1 (want 2)"},
		},
		{
			name:    "acl-short-header",
			layers:  one(file("f", "x").pax(access, "\x02\x00")),
			wantErr: ErrInvalidXattr, wantMsg: []string{"f: system.posix_acl_access: 2 bytes"},
		},
		{
			name:    "acl-partial-entry",
			layers:  one(file("f", "x").pax(access, minimal+"\x20\x00")),
			wantErr: ErrInvalidXattr, wantMsg: []string{"not a 4-byte header and 8-byte entries"},
		},
		{
			name:    "acl-unknown-tag",
			layers:  one(file("f", "x").pax(access, acl(2, aclUserObjRW, aclGroupObjR, [3]uint32{0x40, 0, 0}, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 2: unknown tag 0x40"},
		},
		{
			name:    "acl-bad-permissions",
			layers:  one(file("f", "x").pax(access, acl(2, [3]uint32{aclUserObj, 8, 0}, aclGroupObjR, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 0: permissions 010"},
		},
		{
			name:    "acl-no-other",
			layers:  one(file("f", "x").pax(access, acl(2, aclUserObjRW, aclGroupObjR))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"no OTHER entry"},
		},
		{
			name:    "acl-two-user-obj",
			layers:  one(file("f", "x").pax(access, acl(2, aclUserObjRW, aclUserObjRW, aclGroupObjR, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 1: tag 0x1 out of order"},
		},
		{
			name:    "acl-named-user-without-mask",
			layers:  one(file("f", "x").pax(access, acl(2, aclUserObjRW, [3]uint32{aclUser, 7, 1234}, aclGroupObjR, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 3: tag 0x20 out of order"},
		},
		{
			name:    "acl-out-of-order",
			layers:  one(file("f", "x").pax(access, acl(2, aclGroupObjR, aclUserObjRW, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 0: tag 0x4 out of order"},
		},
		{
			name:    "acl-entry-after-other",
			layers:  one(file("f", "x").pax(access, acl(2, aclUserObjRW, aclGroupObjR, aclOtherNone, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 3: tag 0x20 out of order"},
		},
		{
			// (uid_t)-1, as with the entry's own uid: never an owner.
			name:    "acl-named-user-4294967295",
			layers:  one(file("f", "x").pax(access, acl(2, aclUserObjRW, [3]uint32{aclUser, 7, ^uint32(0)}, aclGroupObjR, aclMaskRWX, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 1: id 4294967295 (allowed 0..4294967294)"},
		},
		{
			name:    "acl-named-group-4294967295",
			layers:  one(file("f", "x").pax(access, acl(2, aclUserObjRW, aclGroupObjR, [3]uint32{aclGroup, 5, ^uint32(0)}, aclMaskRWX, aclOtherNone))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"entry 2: id 4294967295"},
		},
		{
			name:    "acl-from-a-global-header-on-a-file",
			layers:  one(globalHeader(map[string]string{def: realACL}), dir("d/"), file("d/f", "x")),
			wantErr: ErrInvalidXattr, wantMsg: []string{"d/f: system.posix_acl_default: a default ACL on a non-directory"},
		},
	}
}

// checkACL against the kernel itself: random ACLs (the six tags and a
// stray one, perms 0..8, ids including (uid_t)-1) set with fsetxattr on
// a file and on a directory, access and default, must be refused by
// checkACL exactly when the kernel refuses them.
func TestCheckACLAgreesWithKernel(t *testing.T) {
	dirPath := t.TempDir()
	filePath := filepath.Join(dirPath, "f")
	fd, err := unix.Open(filePath, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if err := unix.Setxattr(filePath, aclAccess, []byte(acl(2, aclUserObjRW, aclGroupObjR, aclOtherNone)), 0); err != nil {
		t.Skipf("no POSIX ACLs here: %v", err)
	}
	tags := []uint32{aclUserObj, aclUser, aclGroupObj, aclGroup, aclMask, aclOther, 0x40}
	ids := []uint32{0, 1000, ^uint32(0) - 1, ^uint32(0)}
	rnd := uint64(1)
	next := func(n int) int { // xorshift: the same cases every run
		rnd ^= rnd << 13
		rnd ^= rnd >> 7
		rnd ^= rnd << 17
		return int(rnd % uint64(n))
	}
	// Mostly well-formed skeletons with one change, so that the valid
	// cases are not all trivially rejected.
	okCount := 0
	for i := range 3000 {
		ents := [][3]uint32{aclUserObjRW}
		for range next(3) {
			ents = append(ents, [3]uint32{aclUser, 7, ids[next(len(ids))]})
		}
		ents = append(ents, aclGroupObjR)
		for range next(3) {
			ents = append(ents, [3]uint32{aclGroup, 5, ids[next(len(ids))]})
		}
		if next(3) > 0 {
			ents = append(ents, aclMaskRWX)
		}
		ents = append(ents, aclOtherNone)
		switch next(4) {
		case 0:
			k := next(len(ents))
			ents[k][0] = tags[next(len(tags))]
		case 1:
			ents[next(len(ents))][1] = uint32(next(9))
		case 2:
			a, b := next(len(ents)), next(len(ents))
			ents[a], ents[b] = ents[b], ents[a]
		}
		v := acl(2, ents...)
		for _, c := range []struct {
			path  string
			isDir bool
			key   string
		}{{filePath, false, aclAccess}, {filePath, false, aclDefault}, {dirPath, true, aclAccess}, {dirPath, true, aclDefault}} {
			kerr := unix.Setxattr(c.path, c.key, []byte(v), 0)
			why := checkACL(v, c.key == aclDefault, c.isDir)
			if (kerr == nil) != (why == "") {
				t.Fatalf("case %d %s on %s (dir %v) %x: kernel %v, checkACL %q", i, c.key, c.path, c.isDir, v, kerr, why)
			}
			if why == "" {
				okCount++
			}
			unix.Removexattr(c.path, c.key)
		}
	}
	t.Logf("%d of %d accepted", okCount, 4*3000)
}
