package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// gnuPadded mimics GNU tar's output: the archive padded with zeros to a
// multiple of 10 KiB records. The digests must cover that padding.
func gnuPadded(b []byte) []byte {
	if r := len(b) % 10240; r != 0 {
		b = append(b, make([]byte, 10240-r)...)
	}
	return b
}

func TestDigestsCoverWholeStream(t *testing.T) {
	plain := gnuPadded(mkTar(t, dir("etc"), file("etc/hostname", "box\n"), file("big", strings.Repeat("0123456789", 50000))))
	for _, tc := range []struct {
		name, comp string
		data       []byte
	}{
		{"none", "none", plain},
		{"gzip", "gzip", gz(t, plain)},
		{"zstd", "zstd", zst(t, plain)},
		{"gzip-multistream", "gzip", append(gz(t, plain[:4096]), gz(t, plain[4096:])...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			res, err := Extract(context.Background(), bytes.NewReader(tc.data), s.root, Options{
				ExpectedDiffID: sha(plain),
				ExpectedDigest: strings.TrimPrefix(sha(tc.data), "sha256:"), // bare hex is accepted
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.DiffID != sha(plain) || res.Digest != sha(tc.data) {
				t.Errorf("diffID %s digest %s, want %s %s", res.DiffID, res.Digest, sha(plain), sha(tc.data))
			}
			if res.Compression != tc.comp || res.Bytes != int64(len(plain)) || res.CompressedBytes != int64(len(tc.data)) {
				t.Errorf("result %+v", res)
			}
			vres, err := Validate(context.Background(), bytes.NewReader(tc.data), Options{})
			if err != nil || vres.DiffID != res.DiffID || vres.Digest != res.Digest {
				t.Errorf("Validate: %+v %v", vres, err)
			}
		})
	}
}

func TestDigestMismatch(t *testing.T) {
	data := gz(t, mkTar(t, file("a", "a")))
	s := newSandbox(t)
	wrong := sha([]byte("something else"))
	res, err := Extract(context.Background(), bytes.NewReader(data), s.root, Options{ExpectedDiffID: wrong})
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, errdefs.ErrDataLoss) {
		t.Fatalf("err = %v", err)
	}
	if res.Digest != sha(data) || res.DiffID == "" {
		t.Errorf("digests must be reported on mismatch: %+v", res)
	}
	if !strings.Contains(err.Error(), wrong) {
		t.Errorf("error should say what was expected: %v", err)
	}
	_, err = Validate(context.Background(), bytes.NewReader(data), Options{ExpectedDigest: wrong})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Validate err = %v", err)
	}
	_, err = Validate(context.Background(), bytes.NewReader(data), Options{ExpectedDigest: "md5:abc"})
	if err == nil {
		t.Fatal("accepted a malformed expected digest")
	}
}

func TestProgress(t *testing.T) {
	data := zst(t, mkTar(t, file("big", strings.Repeat("x", 20<<20)), file("small", "s")))
	var calls []Progress
	res, err := Validate(context.Background(), bytes.NewReader(data), Options{Progress: func(p Progress) { calls = append(calls, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 3 {
		t.Fatalf("only %d progress calls", len(calls))
	}
	last := calls[len(calls)-1]
	if last.Bytes != res.Bytes || last.CompressedBytes != res.CompressedBytes || last.Entries != 2 {
		t.Errorf("final progress %+v, result %+v", last, res)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i].Bytes < calls[i-1].Bytes {
			t.Errorf("progress went backwards: %+v then %+v", calls[i-1], calls[i])
		}
	}
}

func TestContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Validate(ctx, bytes.NewReader(mkTar(t, file("a", "a"))), Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestRootfsPrefixStripped(t *testing.T) {
	s := newSandbox(t)
	archive := mkTar(t,
		dir("rootfs/").mode(0o755),
		dir("rootfs/bin/"),
		file("rootfs/bin/busybox", "bb").mode(0o755),
		symlink("rootfs/bin/sh", "/bin/busybox"),
		hardlink("rootfs/bin/ls", "rootfs/bin/busybox"),
	)
	res, err := Extract(context.Background(), bytes.NewReader(archive), s.root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.StrippedPrefix != "rootfs/" {
		t.Errorf("StrippedPrefix = %q", res.StrippedPrefix)
	}
	if got := readFile(t, filepath.Join(s.root, "bin/ls")); got != "bb" {
		t.Errorf("bin/ls = %q", got)
	}
	mustNotExist(t, filepath.Join(s.root, "rootfs"))

	// A hardlink out of the prefix is refused.
	_, err = Validate(context.Background(), bytes.NewReader(mkTar(t, dir("rootfs/"), hardlink("rootfs/x", "etc/passwd"))), Options{})
	if !errors.Is(err, ErrHardlinkEscape) {
		t.Errorf("err = %v", err)
	}

	// "./" first, then rootfs/: a flat rootfs that has a rootfs directory.
	s2 := newSandbox(t)
	res, err = Extract(context.Background(), bytes.NewReader(mkTar(t, dir("./"), dir("./bin"), dir("./rootfs"), file("./rootfs/x", "x"))), s2.root, Options{})
	if err != nil || res.StrippedPrefix != "" {
		t.Fatalf("%+v %v", res, err)
	}
	if got := readFile(t, filepath.Join(s2.root, "rootfs/x")); got != "x" {
		t.Errorf("got %q", got)
	}
	// Layer mode never strips.
	s3 := newSandbox(t)
	if _, err := Extract(context.Background(), bytes.NewReader(mkTar(t, file("rootfs/x", "x"))), s3.root, Options{Mode: Layer}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(s3.root, "rootfs/x")); got != "x" {
		t.Errorf("got %q", got)
	}
}

func TestValidateHardlinks(t *testing.T) {
	for _, tc := range []struct {
		name string
		ents []ent
		opts Options
		want error
	}{
		{"ok", []ent{file("a", "a"), hardlink("b", "a")}, Options{}, nil},
		{"missing", []ent{hardlink("b", "a")}, Options{}, ErrInvalidHardlink},
		{"missing-in-layer-may-be-below", []ent{hardlink("b", "a")}, Options{Mode: Layer}, nil},
		{"dir", []ent{dir("d"), hardlink("b", "d")}, Options{}, ErrInvalidHardlink},
		{"through-symlink", []ent{dir("etc"), file("etc/passwd", "p"), symlink("l", "/etc"), hardlink("b", "l/passwd")}, Options{}, nil},
		{"through-symlink-out", []ent{symlink("l", "../../.."), hardlink("b", "l/etc/passwd")}, Options{}, ErrInvalidHardlink},
		{"to-symlink", []ent{symlink("l", "/nowhere"), hardlink("b", "l")}, Options{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := mkTar(t, tc.ents...)
			_, verr := Validate(context.Background(), bytes.NewReader(data), tc.opts)
			if !errors.Is(verr, tc.want) || (tc.want == nil && verr != nil) {
				t.Errorf("Validate err = %v, want %v", verr, tc.want)
			}
			s := newSandbox(t)
			_, err := Extract(context.Background(), bytes.NewReader(data), s.root, tc.opts)
			if tc.opts.Mode == Layer {
				return // Extract checks against the real (empty) parent
			}
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("Extract err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestErrorsAreTyped(t *testing.T) {
	_, err := Validate(context.Background(), bytes.NewReader(mkTar(t, file("../x", ""))), Options{})
	var ee *EntryError
	if !errors.As(err, &ee) || ee.Entry != "../x" || !errors.Is(err, ErrPathTraversal) || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err = %#v", err)
	}
	if err.Error() != "path traversal detected: ../x" {
		t.Errorf("message %q", err.Error())
	}
	if !errors.Is(ErrFileTooLarge, errdefs.ErrOutOfRange) || !errors.Is(ErrTruncated, errdefs.ErrDataLoss) {
		t.Error("errdefs kinds")
	}
}

func TestExtractMissingRoot(t *testing.T) {
	_, err := Extract(context.Background(), bytes.NewReader(mkTar(t, file("a", "a"))), filepath.Join(t.TempDir(), "nope"), Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestUnknownTypeSkipped(t *testing.T) {
	data := mkTar(t, ent{hdr: tar.Header{Typeflag: 'Z', Name: "weird", Mode: 0o644}})
	var warned []string
	res, err := Validate(context.Background(), bytes.NewReader(data), Options{Warn: func(m string) { warned = append(warned, m) }})
	if err != nil || len(res.Skipped) != 1 || len(warned) != 1 {
		t.Fatalf("%+v %v %q", res, err, warned)
	}
}

func TestDetectCompression(t *testing.T) {
	for _, tc := range []struct {
		head []byte
		want Compression
		err  error
	}{
		{[]byte{0x1f, 0x8b, 8}, Gzip, nil},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd}, Zstd, nil},
		{[]byte{0x50, 0x2a, 0x4d, 0x18}, Zstd, nil},
		{[]byte("BZh9"), "", ErrUnsupportedCompression},
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, "", ErrUnsupportedCompression},
		{[]byte("etc/passwd\x00"), Uncompressed, nil},
	} {
		got, err := DetectCompression(tc.head)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("DetectCompression(%q) = %q %v", tc.head, got, err)
		}
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{"./a/b/": "a/b", "/a//b": "a/b", ".": "", "/": "", "a/./b": "a/b"} {
		got, err := cleanName(in, ErrPathTraversal)
		if err != nil || got != want {
			t.Errorf("cleanName(%q) = %q %v", in, got, err)
		}
	}
	if _, err := cleanName("a\x00b", ErrPathTraversal); !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), `"a\x00b"`) {
		t.Errorf("NUL: %v", err)
	}
	for _, tc := range []struct {
		rel, target string
		escapes     bool
	}{
		{"a", "../x", true}, {"a/b", "../x", false}, {"a/b", "../../x", true}, {"a", "/etc/passwd", false},
		{"a/b", "c/../../x", false}, {"a/b", "./../../../x", true}, {"bin/sh", "busybox", false},
	} {
		if got := symlinkEscapes(tc.rel, tc.target); got != tc.escapes {
			t.Errorf("symlinkEscapes(%q, %q) = %v", tc.rel, tc.target, got)
		}
	}
}
