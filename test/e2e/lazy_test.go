package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/internal/tarballgen"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// bigFileSize is the incompressible file of the lazy test's image: its
// chunks are the ones the test holds back at the proxy.
const bigFileSize = 24 << 20

// TestLazyStart is issue 15's lazy-start proof on real parts: a block
// image published from a tarball import is imported again with --lazy
// through a proxy that holds back the chunks of a large file.
//   - A container starts and prints a file of the image while the
//     background fetch cannot be done (the held chunks are missing).
//   - A reader of the large file waits in an on-demand fetch; the daemon
//     is killed then: the reader gets EIO, what the container wrote is
//     intact, and the restarted daemon attaches the origin again, under
//     the running container, whose reads then succeed.
//   - Released, the fetch completes and the origin is switched to a
//     loop device over the local cache while the container runs; every
//     file it sees equals the tarball's.
func TestLazyStart(t *testing.T) {
	dmtest.Require(t)
	s := startS3Env(t, withLazy())
	img := s.publishLazyImage()
	key, id, ref, want, bigSum, held := img.key, img.id, img.ref, img.tree, img.bigSum, img.held
	release := s.holdChunks(held)
	defer release()

	start := time.Now()
	out, err := s.processImage(cmdTimeout, "--s3-key", key, "--lazy")
	t.Logf("process-image --lazy (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatal(err)
	}
	run := s.waitRun(runID(t, out), cmdTimeout)
	if run.State != admin.RunDone || run.Origin == "" || run.ChainID != img.chainID {
		t.Fatalf("lazy run: %s %q origin %q chain %s (want %s)", run.State, run.Error, run.Origin, run.ChainID, img.chainID)
	}
	if !strings.Contains(out, "usable now") {
		t.Errorf("process-image --lazy does not say the base is usable now")
	}

	// The container runs and reads the image while chunks are missing.
	s.Ctr("run", "-d", "--snapshotter", "flyio", ref, "lazy1", "/bin/busybox", "sleep", "3600")
	// Before the env's own clean-up (cleanups run last first): a live
	// task keeps its rootfs mounted and its device busy.
	t.Cleanup(func() { s.removeContainer("lazy1") })
	exec1 := func(args ...string) (string, error) {
		return s.CtrErr(append([]string{"task", "exec", "--exec-id", fmt.Sprintf("e%d", time.Now().UnixNano()), "lazy1"}, args...)...)
	}
	if got, err := exec1("cat", "/etc/hello"); err != nil || got != "hello from a lazy base\n" {
		t.Fatalf("container on the lazy base printed %q (%v)", got, err)
	}
	o := s.origin(run.Origin)
	t.Logf("origin when the container printed: %+v", o)
	if o.State != "fetching" || o.ChunksPresent >= o.ChunksTotal {
		t.Fatalf("the origin was %s with %d/%d chunks when the container printed: the test proves nothing", o.State, o.ChunksPresent, o.ChunksTotal)
	}
	if got, err := exec1("/bin/sh", "-c", "echo written by the container > /root/data && sync && cat /root/data"); err != nil || got != "written by the container\n" {
		t.Fatalf("writing in the container: %q, %v", got, err)
	}

	// A reader of the held file waits in an on-demand fetch; killing the
	// serving daemon fails it with EIO instead of hanging it.
	reader := exec.Command(filepath.Join(s.Tools, "ctr"), "--address", s.Sock, "--namespace", namespace, "task", "exec", "--exec-id", "reader", "lazy1", "sha256sum", "/big")
	reader.Env = append(reader.Environ(), "PATH="+s.Path)
	var readerOut bytes.Buffer
	reader.Stdout, reader.Stderr = &readerOut, &readerOut
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- reader.Wait() }()
	// It cannot finish while the gate is shut; give it time to be in its
	// read (a reader that starts after the kill must get EIO too).
	select {
	case err := <-readerDone:
		t.Fatalf("the reader of the held file finished with the gate shut: %v\n%s", err, readerOut.String())
	case <-time.After(5 * time.Second):
	}
	s.Daemon.Kill()
	select {
	case err := <-readerDone:
		t.Logf("reader after the kill: %v\n%s", err, readerOut.String())
		if err == nil || !strings.Contains(readerOut.String(), "I/O error") && !strings.Contains(readerOut.String(), "Input/output error") {
			t.Errorf("the reader did not get an I/O error: %v\n%s", err, readerOut.String())
		}
	case <-time.After(2 * time.Minute):
		reader.Process.Kill()
		t.Fatalf("the reader hangs after the serving daemon was killed:\n%s", readerOut.String())
	}
	if got, err := exec1("cat", "/root/data"); err != nil || got != "written by the container\n" {
		t.Errorf("the container's write after the kill: %q, %v", got, err)
	}

	// Restarted (with metrics, which withDaemonTOML cannot add: a top
	// key), the daemon attaches the origin again under the running
	// container. An S3 failure during an on-demand read gives the reader
	// an I/O error that status and the metrics show; then the read
	// succeeds.
	s.proxy.ClearFaults()
	release()
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgText, err := os.ReadFile(s.CfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, s.CfgPath, fmt.Sprintf("metrics_address = %q\n%s", metricsAddr, cfgText))
	if s.Cfg, err = config.Load(s.CfgPath, true); err != nil {
		t.Fatal(err)
	}
	s.proxy.Inject(&s3test.Rule{
		Match: func(r *http.Request) bool { return r.Method == http.MethodGet && held[r.URL.Path] },
		Fault: s3test.Fault{Status: http.StatusInternalServerError, Code: "InternalError"},
	})
	s.StartDaemon("daemon-restarted.log")
	s.WaitDaemon()
	if got, err := exec1("sha256sum", "/big"); err == nil || !strings.Contains(got, "I/O error") && !strings.Contains(got, "Input/output error") {
		t.Errorf("a read failing in S3 gave %q, %v; want an I/O error", got, err)
	}
	o = s.origin(run.Origin)
	t.Logf("origin after the S3 failure: %+v", o)
	if o.ReadErrors == 0 || o.LastError == "" {
		t.Errorf("status does not show the failed read: %d read errors, last error %q", o.ReadErrors, o.LastError)
	}
	mf := scrapeMetrics(t, "http://"+metricsAddr+"/metrics")
	if v := metricValue(t, mf, "flyio_lazy_read_errors_total", map[string]string{"origin": run.Origin}); v == 0 {
		t.Errorf("flyio_lazy_read_errors_total = %v after a failed read", v)
	}
	s.proxy.ClearFaults()
	got, err := exec1("sha256sum", "/big")
	if err != nil || !strings.HasPrefix(got, hex.EncodeToString(bigSum[:])) {
		t.Fatalf("reading the big file after the restart: %q, %v (want %x)", got, err, bigSum)
	}

	// The fetch completes and the origin switches to the local cache
	// while the container runs.
	s.waitUntil("the origin to be local", 5*time.Minute, func() bool { return s.origin(run.Origin).State == "local" })
	o = s.origin(run.Origin)
	t.Logf("origin after the switch: %+v", o)
	if !strings.HasPrefix(o.Device, "/dev/loop") {
		t.Errorf("after the switch: device %q, want a loop device", o.Device)
	}
	if !strings.Contains(s.DaemonLog(), "now read from "+o.Device) {
		t.Errorf("the daemon does not log the switch of the running container's device")
	}
	sums, err := exec1("/bin/sh", "-c", "cd / && find bin etc big root -xdev -type f -exec sha256sum {} +")
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, line := range strings.Split(strings.TrimSpace(sums), "\n") {
		sum, path, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("sha256sum line %q", line)
		}
		if path == "root/data" {
			continue
		}
		w, ok := want[path]
		if !ok || !strings.HasSuffix(w, " "+sum) {
			t.Errorf("%s in the container: %s, the tarball's base has %q", path, sum, w)
		}
		compared++
	}
	if compared < 2 {
		t.Errorf("compared only %d files", compared)
	}
	if got, err := exec1("cat", "/root/data"); err != nil || got != "written by the container\n" {
		t.Errorf("the container's write after the switch: %q, %v", got, err)
	}

	// The origin stays while anything uses it, and goes with the last
	// user: delete-image refuses while the container's snapshot depends
	// on the base; once both are gone, a sweep (gc runs one) removes the
	// origin and its cache.
	s.removeContainer("lazy1")
	s.deleteImage(id)
	cacheDir := filepath.Join(s.Cfg.Lazy.CacheDir, run.Origin)
	s.waitUntil("the origin to be removed", 2*time.Minute, func() bool {
		if out, err := s.flyio("gc", "--force"); err != nil {
			t.Logf("gc: %v\n%s", err, out)
		}
		st, err := s.admin().Status(context.Background())
		return err == nil && len(st.Origins) == 0
	})
	if _, err := os.Stat(cacheDir); !os.IsNotExist(err) {
		t.Errorf("the removed origin's cache %s is still there (%v)", cacheDir, err)
	}
}

// lazyImage is the lazy tests' image: busybox with a large random
// file, imported from its tarball once, published as a block image and
// deleted, so that process-image --lazy finds the block image.
type lazyImage struct {
	key, id, ref string
	chainID      string
	tree         map[string]string // the tarball import's base (baseTree)
	bigSum       [sha256.Size]byte // of /big
	// held are the chunks of /big, incompressible, as the proxy sees
	// their paths: what holdChunks holds back.
	held   map[string]bool
	chunks int // of the block image
}

// lazyPrefix is the lazy tests' [s3] block_prefix.
const lazyPrefix = "blocks/"

// withLazy configures block images under lazyPrefix and a small
// prefetch, with a read timeout long enough for a held chunk.
func withLazy() envOption {
	return withDaemonTOML(fmt.Sprintf("block_prefix = %q\n[lazy]\nprefetch = 2\nread_timeout = \"120s\"", lazyPrefix))
}

func (s *s3env) publishLazyImage() lazyImage {
	const prefix = lazyPrefix
	t := s.T
	t.Helper()
	img := lazyImage{key: "images/lazy.tar", id: "lazy", ref: "images.flyio.local/lazy:latest", held: map[string]bool{}}
	big := make([]byte, bigFileSize)
	rand.Read(big)
	s.put(img.key, busyboxWith(t, "hello from a lazy base\n", map[string][]byte{"big": big}))
	img.bigSum = sha256.Sum256(big)

	out, err := s.processImage(cmdTimeout, "--s3-key", img.key)
	if err != nil {
		t.Fatal(err)
	}
	img.chainID = s.waitRun(runID(t, out), cmdTimeout).ChainID
	img.tree = s.baseTree(img.chainID)
	if out, err = s.flyio("publish-base", "--image-id", img.id); err != nil {
		t.Fatalf("publish-base: %v\n%s", err, out)
	}
	s.deleteImage(img.id)

	m, ok, err := blockimage.LoadManifest(context.Background(), blockimage.NewS3Store(s.up), prefix, img.key)
	if err != nil || !ok {
		t.Fatalf("manifest: %v, %v", ok, err)
	}
	img.chunks = len(m.Chunks)
	for _, c := range m.Chunks {
		if c.CompressedSize*100 > c.Length*97 { // random data: the big file's
			img.held["/"+s.gw.Bucket+"/"+blockimage.ChunkKey(prefix, c.Digest)] = true
		}
	}
	if len(img.held) < 3 {
		t.Fatalf("only %d incompressible chunks of %d; the test needs the big file's", len(img.held), len(m.Chunks))
	}
	return img
}

// holdChunks makes the proxy hold GETs of the held chunks until release
// is called (idempotent).
func (s *s3env) holdChunks(held map[string]bool) (release func()) {
	s.T.Logf("holding back %d chunks", len(held))
	gate := make(chan struct{})
	var openGate sync.Once
	s.proxy.Inject(&s3test.Rule{
		Match: func(r *http.Request) bool { return r.Method == http.MethodGet && held[r.URL.Path] },
		Fault: s3test.Fault{Gate: gate},
	})
	return func() { openGate.Do(func() { close(gate) }) }
}

// origin is the daemon's status of origin name.
func (s *s3env) origin(name string) admin.Origin {
	s.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.admin().Status(ctx)
	if err != nil {
		s.T.Fatalf("status: %v", err)
	}
	for _, o := range st.Origins {
		if o.Name == name {
			return o
		}
	}
	s.T.Fatalf("status has no origin %s: %+v", name, st.Origins)
	return admin.Origin{}
}

func (s *s3env) waitUntil(what string, timeout time.Duration, ok func() bool) {
	s.T.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			s.T.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// busyboxWith is the busybox rootfs tarball with extra files at its
// root.
func busyboxWith(t *testing.T, hello string, extra map[string][]byte) []byte {
	t.Helper()
	var base bytes.Buffer
	if err := tarballgen.Busybox(&base, "/bin/busybox", hello); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tr, tw := tar.NewReader(&base), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range extra {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "rootfs/" + name, Mode: 0o644, Size: int64(len(body)), Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// removeContainer kills a container's task, waits until it can be
// deleted, and removes the container.
func (s *s3env) removeContainer(id string) {
	s.CtrErr("task", "kill", "-s", "KILL", id)
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := s.CtrErr("task", "delete", id)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := s.CtrErr("containers", "rm", id); err != nil && !strings.Contains(out, "not found") {
		s.T.Logf("removing container %s: %v\n%s", id, err, out)
	}
}
