package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/internal/tarballgen"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// largeTimeout bounds one large process-image run under TCG.
const largeTimeout = 25 * time.Minute

// TestProcessImageBusybox turns a busybox rootfs tarball in S3 into an
// image that ctr runs on our snapshotter, checks the derived id and ref,
// that asking again fetches nothing, and that concurrent requests for one
// object join one run.
func TestProcessImageBusybox(t *testing.T) {
	dmtest.Require(t)
	s := startS3Env(t)
	const key, hello = "images/busybox.tar", "hello from process-image\n"
	s.putBusybox(key, hello)

	out, err := s.processImage(cmdTimeout, "--s3-key", key)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("process-image:\n%s", out)
	first := runID(t, out)
	const ref = "images.flyio.local/busybox:latest"
	if want := "done: image " + ref + " (id busybox)"; !strings.Contains(out, want) {
		t.Errorf("process-image output lacks %q", want)
	}
	if imgs := s.Ctr("images", "ls", "-q"); !slices.Contains(strings.Fields(imgs), ref) {
		t.Errorf("ctr images ls -q does not list %s:\n%s", ref, imgs)
	}
	if got := s.Ctr("run", "--rm", "--snapshotter", "flyio", ref, "bb1", "/bin/sh", "-c", "cat /etc/hello"); got != hello {
		t.Errorf("container printed %q, want %q", got, hello)
	}
	getsAfterFirst := s.gets(key)
	if getsAfterFirst == 0 {
		t.Fatalf("no GET of %s reached the gateway; is the daemon's endpoint the proxy?", key)
	}

	// Fetched once: the same key and ETag give back the finished run.
	out, err = s.processImage(cmdTimeout, "--s3-key", key)
	if err != nil {
		t.Fatal(err)
	}
	if again := runID(t, out); again != first {
		t.Errorf("second process-image of %s started run %s, want the finished run %s", key, again, first)
	}
	if n := s.gets(key); n != getsAfterFirst {
		t.Errorf("second process-image of %s made %d more GETs, want none", key, n-getsAfterFirst)
	}

	// Two concurrent requests for a new object join one run. The first GET
	// is held for 3 s so the second request certainly finds it under way.
	const twin = "images/busybox-twin.tar"
	s.putBusybox(twin, hello)
	s.proxy.Inject(&s3test.Rule{Match: s3test.MatchGet(twin), Times: 1, Fault: s3test.Fault{StallHeaders: 3 * time.Second}})
	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = s.processImage(cmdTimeout, "--s3-key", twin)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	a, b := runID(t, outs[0]), runID(t, outs[1])
	if a != b {
		t.Errorf("concurrent process-image of %s ran twice: runs %s and %s", twin, a, b)
	}
	if n := s.gets(twin); n != 1 {
		t.Errorf("concurrent process-image of %s made %d GETs, want 1", twin, n)
	}
	// Same content as busybox.tar: the base is shared (same chain id).
	if got := s.Ctr("run", "--rm", "--snapshotter", "flyio", "images.flyio.local/busybox-twin:latest", "bb2", "/bin/sh", "-c", "cat /etc/hello"); got != hello {
		t.Errorf("twin container printed %q, want %q", got, hello)
	}
	t.Logf("flyio snapshots:\n%s\nstatus:\n%s", s.Ctr("snapshots", "--snapshotter", "flyio", "ls"), s.status())
}

// checkLarge runs ref and compares the sha256 of the sampled files and the
// number of generated files with what was generated.
func checkLarge(t *testing.T, s *s3env, ref, id string, sum tarballgen.Summary, variant string) {
	t.Helper()
	paths := make([]string, 0, len(sum.Samples))
	for p := range sum.Samples {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	script := fmt.Sprintf("cat /etc/variant; echo; find /data -type f | wc -l; sha256sum %s", strings.Join(paths, " "))
	got := s.Ctr("run", "--rm", "--snapshotter", "flyio", ref, id, "/bin/sh", "-c", script)
	var want strings.Builder
	fmt.Fprintf(&want, "%s\n%d\n", variant, sum.Files)
	for _, p := range paths {
		fmt.Fprintf(&want, "%s  %s\n", sum.Samples[p], p)
	}
	if strings.Join(strings.Fields(got), " ") != strings.Join(strings.Fields(want.String()), " ") {
		t.Errorf("%s: container saw\n%s\nwant\n%s", ref, got, want.String())
	}
}

// TestProcessImageLarge processes a generated image of ~370 MB in 20,040
// files, once as tar+gzip and once as tar+zstd, and checks samples of the
// extracted content from inside a container.
func TestProcessImageLarge(t *testing.T) {
	dmtest.Require(t)
	s := startS3Env(t, withBaseSize("1GiB"))
	for _, c := range []string{tarballgen.Gzip, tarballgen.Zstd} {
		key := "images/large-" + c + ".tar." + map[string]string{"gzip": "gz", "zstd": "zst"}[c]
		sum := s.putGenerated(key, tarballgen.Large(c, "large-"+c, "/bin/busybox"))
		if sum.Bytes < 300<<20 || sum.Files < 20000 {
			t.Fatalf("generated image too small: %d bytes in %d files", sum.Bytes, sum.Files)
		}
		start := time.Now()
		out, err := s.processImage(cmdTimeout, "--s3-key", key, "--no-wait")
		if err != nil {
			t.Fatal(err)
		}
		r := s.waitRun(runID(t, out), largeTimeout)
		if r.State != admin.RunDone {
			t.Fatalf("run %s of %s: %s: %s", r.ID, key, r.State, r.Error)
		}
		el := time.Since(start)
		t.Logf("%s: %d compressed bytes, %d bytes, %d entries in %s (%.1f MB/s uncompressed), base %s",
			key, r.CompressedBytes, r.Bytes, r.Entries, el.Round(time.Millisecond), float64(r.Bytes)/el.Seconds()/1e6, r.ChainID)
		checkLarge(t, s, r.Ref, "large-"+c, sum, "large-"+c)
	}
	t.Logf("status:\n%s", s.status())
}

// hostileTar is a rootfs tarball that fills a few MiB, then tries to
// escape the root.
func hostileTar(t *testing.T, entry string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	big := bytes.Repeat([]byte("data that takes pool blocks\n"), 4<<20/28)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "rootfs/", Mode: 0o755},
		{Typeflag: tar.TypeDir, Name: "rootfs/etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "rootfs/etc/filler", Mode: 0o644, Size: int64(len(big))},
		{Typeflag: tar.TypeReg, Name: entry, Mode: 0o644, Size: 5},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size == int64(len(big)) {
			tw.Write(big)
		} else if h.Size > 0 {
			tw.Write([]byte("evil\n"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestProcessImageFailures checks that a hostile archive fails the run
// naming the entry and leaves nothing behind (no base, no import
// snapshot, the pool's used blocks as before), and that missing and
// invalid keys are refused with errors that say so.
func TestProcessImageFailures(t *testing.T) {
	dmtest.Require(t)
	// Without spares every active device and used block belongs to a
	// snapshot, so "the failed run left nothing" can be checked exactly.
	s := startS3Env(t, withSpares(0))
	// A first import creates the empty template of the base size, which a
	// failed run shares; measure the pool after it.
	s.putBusybox("images/busybox.tar", "hi\n")
	if _, err := s.processImage(cmdTimeout, "--s3-key", "images/busybox.tar"); err != nil {
		t.Fatal(err)
	}
	snapsBefore := s.Ctr("snapshots", "--snapshotter", "flyio", "ls")
	usedBefore := usedBlocks(t, s.status())
	thinsBefore := activeThins(t, s.Cfg.Pool.Name)

	const bad = "rootfs/../../../etc/evil"
	s.put("images/hostile.tar", hostileTar(t, bad))
	out, err := s.processImage(cmdTimeout, "--s3-key", "images/hostile.tar")
	t.Logf("process-image of the hostile tarball: %v\n%s", err, out)
	if err == nil {
		t.Fatal("process-image of a path-traversal tarball succeeded")
	}
	if want := "path traversal detected: " + bad; !strings.Contains(out, want) {
		t.Errorf("error does not contain %q", want)
	}
	r := s.waitRun(runID(t, out), time.Minute)
	if r.State != admin.RunFailed || !strings.Contains(r.Error, "path traversal detected") {
		t.Errorf("run %s: state %s, error %q; want failed with path traversal", r.ID, r.State, r.Error)
	}
	if left := s.importSnapshots(); len(left) > 0 {
		t.Errorf("failed run left snapshots: %q", left)
	}
	if after := s.Ctr("snapshots", "--snapshotter", "flyio", "ls"); after != snapsBefore {
		t.Errorf("snapshots changed by a failed run:\nbefore:\n%s\nafter:\n%s", snapsBefore, after)
	}
	if imgs := s.Ctr("images", "ls", "-q"); strings.Contains(imgs, "hostile") {
		t.Errorf("failed run registered an image:\n%s", imgs)
	}
	// The failed run's snapshot is removed at once; its device goes with
	// the background reaper (Remove only marks it, snapshotter/remove.go),
	// so wait for it, bounded.
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		used, thins := usedBlocks(t, s.status()), activeThins(t, s.Cfg.Pool.Name)
		if used == usedBefore && slices.Equal(thins, thinsBefore) {
			break
		}
		if time.Since(start) > time.Minute {
			t.Errorf("a minute after the failed run: pool data blocks used: %d before, %d after; active thin devices: %q before, %q after", usedBefore, used, thinsBefore, thins)
			break
		}
	}

	out, err = s.processImage(cmdTimeout, "--s3-key", "images/missing.tar")
	t.Logf("process-image of a missing key: %v\n%s", err, out)
	if want := "no such key: s3://" + s.gw.Bucket + "/images/missing.tar"; err == nil || !strings.Contains(out, want) {
		t.Errorf("missing key: want an error containing %q", want)
	}

	out, err = s.processImage(cmdTimeout, "--s3-key", "../x")
	t.Logf("process-image of ../x: %v\n%s", err, out)
	if want := "S3 key validation failed: path traversal detected"; err == nil || !strings.Contains(out, want) {
		t.Errorf("invalid key: want an error containing %q", want)
	}
}

// TestProcessImageResume kills the daemon with SIGKILL while it extracts
// the large image and checks that the restarted daemon resumes the run to
// completion and the image runs.
func TestProcessImageResume(t *testing.T) {
	dmtest.Require(t)
	s := startS3Env(t, withBaseSize("1GiB"))
	const key = "images/resume.tar.gz"
	sum := s.putGenerated(key, tarballgen.Medium(tarballgen.Gzip, "resume", "/bin/busybox"))
	out, err := s.processImage(cmdTimeout, "--s3-key", key, "--no-wait")
	if err != nil {
		t.Fatal(err)
	}
	id := runID(t, out)
	r := s.pollRun(id, largeTimeout, func(r admin.Run) bool {
		return r.State.Finished() || (r.State == admin.RunExtracting && r.Entries > 2000)
	})
	if r.State != admin.RunExtracting {
		t.Fatalf("run %s finished (%s) before it could be interrupted", id, r.State)
	}
	t.Logf("killing the daemon at %d entries, %d compressed bytes", r.Entries, r.CompressedBytes)
	s.killAndRestartDaemon()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(s.Dir, "daemon-killed.log"))
			t.Logf("===== killed daemon's log =====\n%s", tail(string(b), 100))
		}
	}()
	r = s.waitRun(id, largeTimeout)
	if r.State != admin.RunDone {
		t.Fatalf("resumed run %s: %s: %s", id, r.State, r.Error)
	}
	checkLarge(t, s, r.Ref, "resumed", sum, "resume")
	if left := s.importSnapshots(); len(left) > 0 {
		t.Errorf("resumed run left snapshots: %q", left)
	}
	// The killed daemon's mount of the half-filled snapshot must be gone,
	// and with it the snapshot itself: containerd's GC removes it from our
	// side shortly after the resumed run dropped it. Only the base stays.
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), "flyio-fill-") || strings.Contains(string(mi), "flyio-import-") {
		t.Errorf("a fill mount survived the resumed run:\n%s", mi)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for st := s.status(); !strings.Contains(st, "snapshots: 1 Committed\n"); st = s.status() {
		if time.Now().After(deadline) {
			t.Errorf("the interrupted run's snapshot is still on our side 2 min after the resumed run:\n%s", st)
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("flyio snapshots:\n%s\nstatus:\n%s", s.Ctr("snapshots", "--snapshotter", "flyio", "ls"), s.status())
}
