package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Archive construction for tests. Hostile archives are built here, in Go,
// rather than checked in, so each case says what it contains.

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

type ent struct {
	hdr  tar.Header
	body []byte
}

func file(name, body string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: testTime}, body: []byte(body)}
}

func dir(name string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: testTime}}
}

func symlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func hardlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: testTime}}
}

func node(name string, typ byte, major, minor int64) ent {
	return ent{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: testTime}}
}

// globalHeader is a PAX global header as `git archive` writes first.
func globalHeader(records map[string]string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: records, Format: tar.FormatPAX}}
}

func (e ent) mode(m int64) ent        { e.hdr.Mode = m; return e }
func (e ent) owner(uid, gid int) ent  { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }
func (e ent) format(f tar.Format) ent { e.hdr.Format = f; return e }
func (e ent) mtime(t time.Time) ent   { e.hdr.ModTime = t; return e }
func (e ent) pax(k, v string) ent {
	if e.hdr.PAXRecords == nil {
		e.hdr.PAXRecords = map[string]string{}
	}
	e.hdr.PAXRecords[k] = v
	e.hdr.Format = tar.FormatPAX
	return e
}

// mkTar writes entries with archive/tar and closes the archive properly.
func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("write body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawHeader builds one ustar header block by hand, for headers
// archive/tar's writer would refuse or rewrite.
func rawHeader(name string, typ byte, size int64, linkname string) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", testTime.Unix()))
	b[156] = typ
	copy(b[157:257], linkname)
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxRecord formats one "len key=value\n" record.
func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	n := len(s)
	for {
		l := len(strconv.Itoa(n)) + len(s)
		if l == n {
			break
		}
		n = l
	}
	return strconv.Itoa(n) + s
}

// rawPAXFile is a PAX extended header carrying records, followed by a
// regular file whose ustar name is benign.
func rawPAXFile(records map[string]string, ustarName, body string) []byte {
	return rawPAX(records, ustarName, '0', "", body)
}

// rawPAX is a PAX extended header followed by an entry of any type.
func rawPAX(records map[string]string, ustarName string, typ byte, linkname, body string) []byte {
	var rec string
	for k, v := range records {
		rec += paxRecord(k, v)
	}
	var out []byte
	out = append(out, rawHeader("PaxHeaders/x", 'x', int64(len(rec)), "")...)
	out = append(out, pad([]byte(rec))...)
	out = append(out, rawHeader(ustarName, typ, int64(len(body)), linkname)...)
	out = append(out, pad([]byte(body))...)
	return out
}

func endOfArchive() []byte { return make([]byte, 1024) }

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zst(t testing.TB, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zeroReader yields n zero bytes, for bombs built by streaming.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// sandbox is a temp directory holding the extraction root next to a
// sentinel tree. snapshot records everything in the sandbox outside the
// root, so a test can prove nothing was created, changed or removed there.
type sandbox struct {
	dir, root, sentinel string
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	d := t.TempDir()
	s := &sandbox{dir: d, root: filepath.Join(d, "root"), sentinel: filepath.Join(d, "sentinel")}
	// Runs before TempDir's own cleanup: a non-root caller cannot empty
	// the read-only directories an archive made.
	t.Cleanup(func() {
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	for _, p := range []string{s.root, s.sentinel, filepath.Join(s.sentinel, "etc")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{"etc/passwd": "root:x:0:0:sentinel", "secret": "sentinel secret", "etc/shadow": "shadow"} {
		if err := os.WriteFile(filepath.Join(s.sentinel, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("sentinel", filepath.Join(d, "sentinel-link")); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sandbox) snapshot(t testing.TB) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == s.root {
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			snap[p] = "root " + fi.Mode().Type().String()
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d %d %d", fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + sha(b)
		}
		snap[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func (s *sandbox) assertUnchanged(t testing.TB, before map[string]string) {
	t.Helper()
	after := s.snapshot(t)
	for p, d := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("ESCAPE: %s was removed", p)
		} else if a != d {
			t.Errorf("ESCAPE: %s changed: %s -> %s", p, d, a)
		}
	}
	for p, d := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("ESCAPE: %s appeared outside the root: %s", p, d)
		}
	}
}

func extractBytes(ctx context.Context, b []byte, root string, opts Options) (Result, error) {
	return Extract(ctx, bytes.NewReader(b), root, opts)
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func mustNotExist(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err == nil {
		t.Errorf("%s exists, should not", p)
	} else if !os.IsNotExist(err) {
		t.Errorf("lstat %s: %v", p, err)
	}
}

func isRoot() bool { return os.Geteuid() == 0 }

func hasAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// zstdFrameWithWindow hand-builds a zstd frame that declares a window of
// 1<<windowLog bytes and carries data as one raw block (len(data) must
// be under 128 KiB). Encoders cap the window to the input; a hostile
// producer need not.
func zstdFrameWithWindow(windowLog int, data []byte) []byte {
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte((windowLog - 10) << 3)}
	bh := uint32(len(data))<<3 | 1 // raw block, last
	out = append(out, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(out, data...)
}
