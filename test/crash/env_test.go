package crash

import (
	"archive/tar"
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
	"github.com/superfly/flyio-image-manager/test/harness"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// namespace is the containerd namespace of the tests (and of the images
// process-image registers).
const namespace = harness.Namespace

// env is our daemon, restartable on the same root_dir and pool, a private
// containerd using it as the "flyio" proxy snapshotter (harness.Env), and
// a versitygw S3 server for process-image.
type env struct {
	*harness.Env
	s3      *s3test.Server
	nDaemon int
}

type proc = harness.Proc

var (
	flyioBin  = harness.FlyioBin
	toolsBin  = harness.ToolsBin
	writeFile = harness.WriteFile
	tail      = harness.Tail
)

// poolTOML is the [pool] section of the daemon's configuration; "" means
// loopback files under root_dir. snapshotterTOML lines are added to the
// [snapshotter] section.
func newEnv(t *testing.T, poolTOML string, snapshotterTOML ...string) *env {
	t.Helper()
	// versitygw is installed next to containerd (test/tools.sh); in the VM
	// ~/go/bin is not there.
	t.Setenv("PATH", toolsBin(t)+":"+os.Getenv("PATH"))
	e := &env{s3: s3test.Start(t)}
	if poolTOML == "" {
		poolTOML = fmt.Sprintf("name = %q\ndata_size = \"4GiB\"\nmetadata_size = \"64MiB\"\n", fmt.Sprintf("fim-crash-%d-%d", os.Getpid(), poolSeq()))
	}
	e.Env = harness.New(t, harness.Options{
		Pool:        poolTOML,
		Snapshotter: "base_size = \"128MiB\"\n" + strings.Join(snapshotterTOML, "\n"),
		Containerd:  `snapshotter = "flyio"`,
		Tables: fmt.Sprintf(`[s3]
endpoint = %q
region = %q
bucket = %q
path_style = true
retry_base_delay = 0.01
retry_max_delay = 0.1
layer_prefix = "layers/"
`, e.s3.Endpoint, e.s3.Region, e.s3.Bucket),
		DaemonEnv: e.s3.Env(),
		// push-layers (and offline commands) need the S3 credentials.
		CmdEnv: e.s3.Env(),
		// A daemon killed at a failpoint has nothing left to stop.
		ExitedOK: true,
		LogTail:  80,
	})
	return e
}

var seq int

func poolSeq() int { seq++; return seq }

// startDaemon starts the daemon with failpoints armed (fp may be "") and
// does not wait: a failpoint may kill it during start-up.
func (e *env) startDaemon(fp string) *proc {
	e.T.Helper()
	e.nDaemon++
	return e.StartDaemon(fmt.Sprintf("daemon-%02d.log", e.nDaemon), failpoint.EnvVar+"="+fp)
}

// waitKilled waits for the daemon to die at failpoint fp.
func (e *env) waitKilled(fp string, timeout time.Duration) {
	e.T.Helper()
	err, ok := e.Daemon.Wait(timeout)
	if ok {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
			e.T.Fatalf("daemon exited with %v, want killed at failpoint %s\n%s", err, fp, e.DaemonLog())
		}
		if !strings.Contains(e.DaemonLog(), "failpoint "+fp+" hit") {
			e.T.Fatalf("daemon was killed, but not at failpoint %s:\n%s", fp, tail(e.DaemonLog(), 40))
		}
		return
	}
	e.T.Fatalf("daemon still running %s after the operation that should reach failpoint %s\n%s", timeout, fp, tail(e.DaemonLog(), 40))
}

// sn is a snapshots client straight to the daemon's socket: the calls
// containerd makes, without containerd's own bookkeeping in between.
func (e *env) sn() snapshots.Snapshotter {
	e.T.Helper()
	conn, err := grpc.NewClient("unix://"+e.Cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "flyio")
}

// meta opens the metadata read-only; the daemon must be stopped.
func (e *env) meta() *metadata.Store {
	e.T.Helper()
	st, err := metadata.Open(e.metaPath(), metadata.Options{ReadOnly: true, LockTimeout: 5 * time.Second})
	if err != nil {
		e.T.Fatal(err)
	}
	return st
}

// image is a process-image tarball: busybox, a marker file and filler
// big enough (12 MiB) that the extractor reports progress mid-way.
type image struct {
	key    string
	marker string
	sum    string // md5 of /filler
	data   []byte
}

func makeImage(t *testing.T, key, marker string, seed int64) image {
	t.Helper()
	bb, err := ociarchive.BusyboxLayer(ociarchive.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	filler := make([]byte, 12<<20)
	rand.New(rand.NewSource(seed)).Read(filler)
	bb = append(bb,
		ociarchive.Bytes("bin/md5sum", 0o755, nil), // replaced below by a symlink
		ociarchive.File("marker", 0o644, marker+"\n"),
		ociarchive.Bytes("filler", 0o644, filler))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, en := range bb {
		h := en.Header
		if h.Name == "bin/md5sum" {
			h = tar.Header{Name: "bin/md5sum", Typeflag: tar.TypeSymlink, Linkname: "/bin/busybox", Mode: 0o777}
			en.Body = nil
		}
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(en.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return image{key: key, marker: marker, sum: fmt.Sprintf("%x", md5.Sum(filler)), data: buf.Bytes()}
}

func (im image) id() string  { return strings.TrimSuffix(filepath.Base(im.key), ".tar") }
func (im image) ref() string { return "images.flyio.local/" + im.id() + ":latest" }

// put uploads the tarball to the S3 server.
func (e *env) put(im image) { e.s3.PutObject(e.T, im.key, im.data) }

// processImage runs `flyio-image-manager process-image` and waits for it.
func (e *env) processImage(im image) (string, error) {
	return e.Fim("process-image", "--s3-key", im.key, "--image-id", im.id())
}

// checkImage runs a container from an imported image and checks its
// marker and filler.
func (e *env) checkImage(im image, id string) {
	e.T.Helper()
	out := e.Ctr("run", "--rm", "--snapshotter", "flyio", im.ref(), id, "/bin/sh", "-c", "cat /marker; md5sum /filler")
	want := im.marker + "\n" + im.sum + "  /filler\n"
	if out != want {
		e.T.Errorf("container %s of %s printed:\n%s\nwant:\n%s", id, im.ref(), out, want)
	}
}

func (e *env) metaPath() string { return filepath.Join(e.Cfg.RootDir, "metadata.db") }
