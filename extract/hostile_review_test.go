package extract

import (
	"strconv"
	"strings"
	"testing"
)

// reviewCases are the hostile archives of the review of issue 11: each
// runs through TestHostileArchives (both resolvers) and, like every case
// without a parent layer, through the differential test.
func reviewCases() []hostileCase {
	// chainN: P is 2,000 deep; s0 -> /P, s_i -> /P/s_{i-1}; deep ->
	// /P/s_{n-2}, so "deep/..." goes through n symlinks.
	p := strings.TrimSuffix(strings.Repeat("d/", 2000), "/")
	chainN := func(n, files int) func(*testing.T, *sandbox) [][]byte {
		return func(t *testing.T, _ *sandbox) [][]byte {
			ents := []ent{dir(p + "/"), symlink(p+"/s0", "/"+p)}
			for i := 1; i < n-1; i++ {
				ents = append(ents, symlink(p+"/s"+strconv.Itoa(i), "/"+p+"/s"+strconv.Itoa(i-1)))
			}
			ents = append(ents, symlink("deep", "/"+p+"/s"+strconv.Itoa(n-2)))
			for i := range files {
				ents = append(ents, file("deep/f"+strconv.Itoa(i), "x"))
			}
			return [][]byte{mkTar(t, ents...)}
		}
	}
	// shortChain: c0 -> d, c_i -> c_{i-1}: "c<n-1>" goes through n
	// symlinks.
	shortChain := func(n int) []ent {
		ents := []ent{dir("d/"), symlink("c0", "d")}
		for i := 1; i < n; i++ {
			ents = append(ents, symlink("c"+strconv.Itoa(i), "c"+strconv.Itoa(i-1)))
		}
		return ents
	}
	last := "c" + strconv.Itoa(38)
	// deep6000: a directory entry 6,000 levels down, each name short of
	// PATH_MAX, reached through two symlinks.
	e := strings.TrimSuffix(strings.Repeat("e/", 2000), "/")
	f := strings.TrimSuffix(strings.Repeat("f/", 2000), "/")
	deep6000 := one(dir(p+"/"), symlink("l1", "/"+p), dir("l1/"+e+"/"), symlink("l2", "l1/"+e), dir("l2/"+f+"/"))
	return append(append(append(xattrCases(), aclCases()...), replaceCases()...), []hostileCase{
		// --- what a symlink leads to is remembered (item 1) --------
		{
			name:   "symlink-chain-40-links-of-2000-components",
			layers: chainN(40, 3),
			check:  fileIs(p+"/f2", "x"),
		},
		{
			name:    "symlink-chain-41-links-of-2000-components",
			layers:  chainN(41, 1),
			wantErr: ErrInvalidParent, wantMsg: []string{"deep/f0 (a symlink loop"},
		},
		{
			// 39 symlinks resolved (and remembered) once, then reached
			// through two more: 41 in all, a loop to the kernel.
			name:    "remembered-chain-plus-two-is-41",
			layers:  one(append(shortChain(39), file(last+"/x", "x"), symlink("e", "f"), symlink("f", last), file("e/y", "y"))...),
			wantErr: ErrInvalidParent, wantMsg: []string{"e/y (a symlink loop"},
		},
		{
			name:   "remembered-chain-plus-one-is-40",
			layers: one(append(shortChain(39), file(last+"/x", "x"), symlink("f", last), file("f/y", "y"))...),
			check:  fileIs("d/y", "y"),
		},
		{
			name:   "remembered-symlink-replaced-by-symlink",
			layers: one(dir("d1/"), dir("d2/"), symlink("a", "d1"), file("a/x", "x"), symlink("a", "d2"), file("a/y", "y")),
			check: func(t *testing.T, s *sandbox, r Result) {
				fileIs("d1/x", "x")(t, s, r)
				fileIs("d2/y", "y")(t, s, r)
				mustNotExist(t, s.root+"/d1/y")
			},
		},
		{
			name:    "remembered-target-dir-replaced-by-file",
			opts:    layer, // a rootfs keeps a non-empty directory (replaceCases)
			layers:  one(dir("d/"), symlink("l", "d"), file("l/x", "x"), file("d", "now a file"), file("l/y", "y")),
			wantErr: ErrInvalidParent, wantMsg: []string{"l/y (a component of its directory is not a directory)"},
		},
		{
			name:    "remembered-nested-symlink-replaced-dangling",
			layers:  one(dir("d/"), symlink("in", "d"), symlink("out", "in"), file("out/x", "x"), symlink("in", "nowhere"), file("out/y", "y")),
			wantErr: ErrInvalidParent, wantMsg: []string{"out/y (a symlink in its directory leads nowhere)"},
		},
		{
			// a is a directory l's resolution went through, replaced by
			// a symlink: l now leads into z.
			name:   "remembered-path-directory-replaced-by-symlink",
			opts:   layer, // a rootfs keeps a non-empty directory (replaceCases)
			layers: one(dir("a/b/"), dir("z/b/"), symlink("l", "a/b"), file("l/x", "x"), symlink("a", "z"), file("l/y", "y")),
			check: func(t *testing.T, s *sandbox, r Result) {
				fileIs("z/b/y", "y")(t, s, r)
				mustNotExist(t, s.root+"/z/b/x") // x went into the old a/b, which is gone
			},
		},
		{
			// Replacing what no remembered resolution met keeps the
			// memo, and the memo stays right.
			name:   "remembered-kept-when-others-replaced",
			layers: one(dir("d/"), symlink("l", "d"), file("l/x", "x"), symlink("other", "a"), symlink("other", "b"), dir("e/"), file("e", "now a file"), file("l/y", "y")),
			check:  fileIs("d/y", "y"),
		},
		{
			// Extract applied directory metadata at the end by walking
			// down to each directory, and gave up past 4,096 levels
			// ("too many levels of symbolic links") where Validate
			// passed: one rule now refuses, at the entry, a directory
			// more than 4,096 levels deep.
			name:    "directory-6000-levels-deep-through-symlinks",
			layers:  deep6000,
			wantErr: ErrInvalidName, wantMsg: []string{"(a directory more than 4096 levels deep)"},
		},
		{
			// Files and implied parents that deep are fine: nothing
			// walks down to them.
			name:   "file-6000-levels-deep-through-symlinks",
			layers: one(dir(p+"/"), symlink("l1", "/"+p), dir("l1/"+e+"/"), symlink("l2", "l1/"+e), file("l2/"+f+"/x", "x")),
		},
		{
			name:   "remembered-dotdot-from-a-replaced-directory",
			layers: one(dir("a/b/"), symlink("a/b/up", ".."), file("a/b/up/x", "x"), dir("a2/b/"), symlink("a2/b/up", ".."), file("a2/b/up/y", "y")),
			check: func(t *testing.T, s *sandbox, r Result) {
				fileIs("a/x", "x")(t, s, r)
				fileIs("a2/y", "y")(t, s, r)
			},
		},
	}...)
}

// xattrCases: the limits on an entry's xattrs (item 2) are one rule that
// Validate and Extract both apply before anything is written, where
// Extract alone used to meet the kernel's (E2BIG, ERANGE, EINVAL) and
// Validate passed the archive.
func xattrCases() []hostileCase {
	many := file("many", "x")
	for i := range maxXattrs + 1 {
		many = many.pax("SCHILY.xattr.user.k"+strconv.Itoa(i), "v")
	}
	return []hostileCase{
		{
			name:    "xattr-value-over-64KiB",
			layers:  one(file("big", "x").pax("SCHILY.xattr.user.big", strings.Repeat("v", 64<<10+1))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"invalid xattr: big: user.big: value of 65537 bytes (max 65536)"},
		},
		{
			name:    "xattr-too-many",
			layers:  one(many),
			wantErr: ErrInvalidXattr, wantMsg: []string{"invalid xattr: many: 129 xattrs (max 128)"},
		},
		{
			name:    "xattr-name-over-255",
			layers:  one(file("n", "x").pax("SCHILY.xattr.user."+strings.Repeat("n", 251), "v")),
			wantErr: ErrInvalidXattr, wantMsg: []string{"n: name of 256 bytes (max 255)"},
		},
		{
			name:    "xattr-namespace-only",
			layers:  one(file("ns", "x").pax("SCHILY.xattr.user.", "v")),
			wantErr: ErrInvalidXattr, wantMsg: []string{`ns: "user." (no name after the namespace)`},
		},
		{
			name:    "xattr-empty-name",
			layers:  one(file("e", "x").pax("SCHILY.xattr.", "v")),
			wantErr: ErrInvalidXattr, wantMsg: []string{"e: empty name"},
		},
		{
			name: "xattr-total-over-64KiB",
			layers: one(file("tot", "x").pax("SCHILY.xattr.user.a", strings.Repeat("a", 40<<10)).
				pax("SCHILY.xattr.user.b", strings.Repeat("b", 40<<10))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"tot: names and values total 81932 bytes (max 65536)"},
		},
		{
			name:    "xattr-capability-malformed",
			layers:  one(file("cap", "x").pax("SCHILY.xattr.security.capability", "garbage")),
			wantErr: ErrInvalidXattr, wantMsg: []string{"cap: security.capability: 7 bytes that are no v2"},
		},
		{
			name:    "xattr-capability-v1-refused-by-the-kernel",
			layers:  one(file("cap", "x").pax("SCHILY.xattr.security.capability", "\x00\x00\x00\x01"+strings.Repeat("\x00", 8))),
			wantErr: ErrInvalidXattr,
		},
		{
			// The whole first word is the kernel's magic, not its top
			// byte: 0x02000100 and 0x02000002 fail fsetxattr.
			name:    "xattr-capability-v2-with-stray-bits",
			layers:  one(file("cap", "x").pax("SCHILY.xattr.security.capability", "\x00\x01\x00\x02"+strings.Repeat("\x00", 16))),
			wantErr: ErrInvalidXattr,
		},
		{
			name:    "xattr-capability-v2-with-a-stray-low-bit",
			layers:  one(file("cap", "x").pax("SCHILY.xattr.security.capability", "\x02\x00\x00\x02"+strings.Repeat("\x00", 16))),
			wantErr: ErrInvalidXattr,
		},
		{
			name: "xattr-capability-v2-ok",
			layers: one(file("ping", "x").pax("SCHILY.xattr.security.capability",
				"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")),
		},
		{
			name:    "xattr-limit-on-a-symlink-too",
			layers:  one(symlink("l", "x").pax("SCHILY.xattr.user.big", strings.Repeat("v", 64<<10+1))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"l: user.big"},
		},
		{
			name: "xattr-from-a-global-header",
			// Each part is within its own bound; the entry is not.
			layers: one(globalHeader(map[string]string{"SCHILY.xattr.user.g": strings.Repeat("g", 40<<10)}),
				file("g", "x").pax("SCHILY.xattr.user.e", strings.Repeat("e", 40<<10))),
			wantErr: ErrInvalidXattr, wantMsg: []string{"g: names and values total 81932 bytes (max 65536)"},
		},
	}
}
