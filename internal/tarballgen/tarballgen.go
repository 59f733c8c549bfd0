// Package tarballgen writes image tarballs in the predecessor tool's
// layout (every entry under "rootfs/", plain or compressed tar) for the
// process-image end-to-end tests and the S3 fill benchmark: a tiny busybox
// root filesystem, and large deterministic trees of many files that are
// generated while they are written, so hundreds of megabytes can stream
// into an S3 upload without ever being held in memory.
package tarballgen

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// epoch fixes every timestamp, so the same Spec always gives the same bytes.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Compression of the tar stream.
const (
	None = ""
	Gzip = "gzip"
	Zstd = "zstd"
)

// compress wraps w in the compressor; close flushes it (not w).
func compress(w io.Writer, compression string) (io.Writer, func() error, error) {
	switch compression {
	case None:
		return w, func() error { return nil }, nil
	case Gzip:
		zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return nil, nil, err
		}
		return zw, zw.Close, nil
	case Zstd:
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			return nil, nil, err
		}
		return zw, zw.Close, nil
	}
	return nil, nil, fmt.Errorf("tarballgen: unknown compression %q", compression)
}

// Busybox writes a plain-tar root filesystem in the rootfs/ layout: the
// static busybox binary read from busybox (Debian's busybox-static puts it
// at /bin/busybox) with absolute applet symlinks, the directories a
// runtime mounts over, and /etc/hello holding hello.
func Busybox(w io.Writer, busybox, hello string) error {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("tarballgen: %w (install busybox-static)", err)
	}
	tw := tar.NewWriter(w)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "rootfs/" + name, Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "rootfs/" + name, Mode: mode, Size: int64(len(body)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	steps := []func() error{
		func() error { return dir("", 0o755) },
		func() error { return dir("bin/", 0o755) },
		func() error { return file("bin/busybox", 0o755, bin) },
	}
	for _, a := range []string{"sh", "cat", "echo", "ls", "sha256sum", "find", "wc", "test", "stat", "head", "sync", "true"} {
		steps = append(steps, func() error {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "rootfs/bin/" + a, Linkname: "/bin/busybox", Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX})
		})
	}
	for _, d := range []string{"dev/", "proc/", "sys/", "etc/", "root/", "usr/", "usr/bin/"} {
		steps = append(steps, func() error { return dir(d, 0o755) })
	}
	steps = append(steps,
		func() error { return dir("tmp/", 0o1777) },
		func() error { return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")) },
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\n")) },
		func() error { return file("etc/hello", 0o644, []byte(hello)) },
	)
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("tarballgen: busybox tarball: %w", err)
		}
	}
	return tw.Close()
}

// Spec describes a generated tree: busybox (so it runs), then SmallFiles
// files of SmallMin..SmallMax bytes spread over directories of 500, then
// LargeFiles files of LargeSize bytes. Content is half pseudo-random, half
// repeated text, so it compresses about 2:1 like real images do.
type Spec struct {
	Seed        uint64
	Busybox     string // path of a static busybox; "" for none
	SmallFiles  int
	SmallMin    int
	SmallMax    int
	LargeFiles  int
	LargeSize   int64
	Compression string
	// Variant is written to /etc/variant, so two specs with otherwise
	// equal trees still give different layers (different diff ids).
	Variant string
}

// Large is the image the end-to-end tests use: 20,000 small files
// (1–12 KiB) plus 40 files of 6 MiB, about 370 MB uncompressed.
func Large(compression, variant, busybox string) Spec {
	return Spec{Seed: 42, Busybox: busybox, SmallFiles: 20000, SmallMin: 1 << 10, SmallMax: 12 << 10,
		LargeFiles: 40, LargeSize: 6 << 20, Compression: compression, Variant: variant}
}

// Medium is big enough that an extraction can be interrupted part-way in
// the test VM (6,000 small files plus 4 of 6 MiB, about 65 MB), and small
// enough to keep the resume test short.
func Medium(compression, variant, busybox string) Spec {
	return Spec{Seed: 7, Busybox: busybox, SmallFiles: 6000, SmallMin: 1 << 10, SmallMax: 12 << 10,
		LargeFiles: 4, LargeSize: 6 << 20, Compression: compression, Variant: variant}
}

// Summary is what a generated tarball holds.
type Summary struct {
	Files int   // regular files
	Bytes int64 // regular file content
	// Samples maps a few files' absolute paths in the image to the hex
	// sha256 of their content, for checking the extracted tree.
	Samples map[string]string
}

// SmallPath and LargePath are the image paths of generated file i.
func SmallPath(i int) string { return fmt.Sprintf("/data/d%03d/f%05d.bin", i/500, i) }
func LargePath(i int) string { return fmt.Sprintf("/data/large/l%03d.bin", i) }

// Write streams the tarball of spec to w.
func Write(w io.Writer, spec Spec) (Summary, error) {
	sum := Summary{Samples: map[string]string{}}
	cw, closeC, err := compress(w, spec.Compression)
	if err != nil {
		return sum, err
	}
	tw := tar.NewWriter(cw)
	hdr := func(h *tar.Header) error {
		h.Name = "rootfs/" + h.Name
		h.ModTime, h.Format = epoch, tar.FormatPAX
		return tw.WriteHeader(h)
	}
	buf := make([]byte, 64<<10)
	writeFile := func(path string, size int64, stream uint64, sample bool) error {
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: path[1:], Mode: 0o644, Size: size}); err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(spec.Seed, stream))
		h := sha256.New()
		for left := size; left > 0; {
			n := int(min(left, int64(len(buf))))
			fill(rng, buf[:n])
			if sample {
				h.Write(buf[:n])
			}
			if _, err := tw.Write(buf[:n]); err != nil {
				return err
			}
			left -= int64(n)
		}
		sum.Files++
		sum.Bytes += size
		if sample {
			sum.Samples[path] = hex.EncodeToString(h.Sum(nil))
		}
		return nil
	}

	if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: "", Mode: 0o755}); err != nil {
		return sum, err
	}
	if spec.Busybox != "" {
		bin, err := os.ReadFile(spec.Busybox)
		if err != nil {
			return sum, fmt.Errorf("tarballgen: %w (install busybox-static)", err)
		}
		for _, d := range []string{"bin", "dev", "proc", "sys", "etc", "tmp"} {
			if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
				return sum, err
			}
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))}); err != nil {
			return sum, err
		}
		if _, err := tw.Write(bin); err != nil {
			return sum, err
		}
		for _, a := range []string{"sh", "cat", "sha256sum", "find", "wc", "ls"} {
			if err := hdr(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "/bin/busybox", Mode: 0o777}); err != nil {
				return sum, err
			}
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/variant", Mode: 0o644, Size: int64(len(spec.Variant))}); err != nil {
			return sum, err
		}
		if _, err := io.WriteString(tw, spec.Variant); err != nil {
			return sum, err
		}
	}
	if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755}); err != nil {
		return sum, err
	}
	sizes := rand.New(rand.NewPCG(spec.Seed, 1<<62))
	for i := 0; i < spec.SmallFiles; i++ {
		if i%500 == 0 {
			if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("data/d%03d/", i/500), Mode: 0o755}); err != nil {
				return sum, err
			}
		}
		size := int64(spec.SmallMin)
		if spec.SmallMax > spec.SmallMin {
			size += int64(sizes.IntN(spec.SmallMax - spec.SmallMin + 1))
		}
		if err := writeFile(SmallPath(i), size, uint64(i), i%4999 == 0 || i == spec.SmallFiles-1); err != nil {
			return sum, err
		}
	}
	if spec.LargeFiles > 0 {
		if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: "data/large/", Mode: 0o755}); err != nil {
			return sum, err
		}
	}
	for i := 0; i < spec.LargeFiles; i++ {
		if err := writeFile(LargePath(i), spec.LargeSize, 1<<40+uint64(i), i == 0 || i == spec.LargeFiles-1); err != nil {
			return sum, err
		}
	}
	if err := tw.Close(); err != nil {
		return sum, err
	}
	return sum, closeC()
}

// text is the compressible half of generated content.
var text = []byte("flyio-image-manager generated file content; the quick brown fox jumps over the lazy dog 0123456789\n")

// fill makes p half random, half text, alternating in 512-byte runs.
func fill(rng *rand.Rand, p []byte) {
	for off := 0; off < len(p); off += 512 {
		run := p[off:min(off+512, len(p))]
		if (off/512)%2 == 0 {
			for i := 0; i+8 <= len(run); i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					run[i+j] = byte(v >> (8 * j))
				}
			}
			for i := len(run) &^ 7; i < len(run); i++ {
				run[i] = byte(rng.Uint32())
			}
		} else {
			for i := range run {
				run[i] = text[(off+i)%len(text)]
			}
		}
	}
}

// Reader streams the tarball of spec through a pipe, generated as it is
// read. The Summary is complete once the reader has returned io.EOF.
func Reader(spec Spec) (io.ReadCloser, *Summary) {
	pr, pw := io.Pipe()
	sum := &Summary{}
	go func() {
		s, err := Write(pw, spec)
		*sum = s
		pw.CloseWithError(err)
	}()
	return pr, sum
}
