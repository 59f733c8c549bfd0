package crash

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand"
	"net"
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

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/test/harness"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// namespace is the containerd namespace of the tests (and of the images
// process-image registers).
const namespace = "test"

const cmdTimeout = 3 * time.Minute

// env is our daemon, restartable on the same root_dir and pool, a private
// containerd using it as the "flyio" proxy snapshotter, and a versitygw S3
// server for process-image.
type env struct {
	t       *testing.T
	dir     string
	bin     string
	tools   string
	path    string
	cfgPath string
	cfg     config.Config
	sock    string // containerd's
	s3      *s3test.Server

	daemon  *proc
	ctrd    *proc
	nDaemon int
}

type proc = harness.Proc

// poolTOML is the [pool] section of the daemon's configuration; "" means
// loopback files under root_dir. snapshotterTOML lines are added to the
// [snapshotter] section.
func newEnv(t *testing.T, poolTOML string, snapshotterTOML ...string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), bin: flyioBin(t), tools: toolsBin(t)}
	e.path = harness.ToolsPath(e.tools)
	// versitygw is installed next to containerd (test/tools.sh); in the VM
	// ~/go/bin is not there.
	t.Setenv("PATH", e.tools+":"+os.Getenv("PATH"))
	e.s3 = s3test.Start(t)
	if poolTOML == "" {
		poolTOML = fmt.Sprintf("name = %q\ndata_size = \"4GiB\"\nmetadata_size = \"64MiB\"\n", fmt.Sprintf("fim-crash-%d-%d", os.Getpid(), poolSeq()))
	}
	e.sock = filepath.Join(e.dir, "containerd.sock")
	e.cfgPath = filepath.Join(e.dir, "flyio.toml")
	writeFile(t, e.cfgPath, fmt.Sprintf(`root_dir = %q
address = %q
admin_address = %q
[pool]
%s
[snapshotter]
base_size = "128MiB"
%s
[s3]
endpoint = %q
region = %q
bucket = %q
path_style = true
retry_base_delay = 0.01
retry_max_delay = 0.1
layer_prefix = "layers/"
[containerd]
address = %q
namespace = %q
snapshotter = "flyio"
`, filepath.Join(e.dir, "flyio"), filepath.Join(e.dir, "snapshotter.sock"), filepath.Join(e.dir, "admin.sock"),
		poolTOML, strings.Join(snapshotterTOML, "\n"), e.s3.Endpoint, e.s3.Region, e.s3.Bucket, e.sock, namespace))
	cfg, err := config.Load(e.cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	t.Cleanup(e.stop)
	return e
}

var seq int

func poolSeq() int { seq++; return seq }

func flyioBin(t *testing.T) string { return harness.FlyioBin(t) }

func toolsBin(t *testing.T) string { return harness.ToolsBin(t) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *env) start(name, logName string, env []string, args ...string) *proc {
	e.t.Helper()
	return harness.StartProc(e.t, name, filepath.Join(e.dir, logName), e.path, exec.Command(args[0], args[1:]...), env...)
}

// startDaemon starts the daemon with failpoints armed (fp may be "") and
// does not wait: a failpoint may kill it during start-up.
func (e *env) startDaemon(fp string) *proc {
	e.t.Helper()
	if e.daemon != nil && !e.daemon.Exited() {
		e.t.Fatalf("daemon %s still running", e.daemon.Log)
	}
	e.nDaemon++
	env := append(e.s3.Env(), failpoint.EnvVar+"="+fp)
	e.daemon = e.start("daemon", fmt.Sprintf("daemon-%02d.log", e.nDaemon), env, e.bin, "--config", e.cfgPath, "daemon")
	return e.daemon
}

// waitDaemon waits until the daemon serves both sockets. A leftover
// socket file of a killed daemon is no proof, so it dials.
func (e *env) waitDaemon() {
	e.t.Helper()
	e.waitFor("the daemon", 60*time.Second, e.daemon, func() bool {
		for _, sock := range []string{e.cfg.Address, e.cfg.AdminAddress} {
			c, err := net.Dial("unix", sock)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
}

// waitKilled waits for the daemon to die at failpoint fp.
func (e *env) waitKilled(fp string, timeout time.Duration) {
	e.t.Helper()
	err, ok := e.daemon.Wait(timeout)
	if ok {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
			e.t.Fatalf("daemon exited with %v, want killed at failpoint %s\n%s", err, fp, e.daemonLog())
		}
		if !strings.Contains(e.daemonLog(), "failpoint "+fp+" hit") {
			e.t.Fatalf("daemon was killed, but not at failpoint %s:\n%s", fp, tail(e.daemonLog(), 40))
		}
		return
	}
	e.t.Fatalf("daemon still running %s after the operation that should reach failpoint %s\n%s", timeout, fp, tail(e.daemonLog(), 40))
}

func (e *env) daemonLog() string {
	b, _ := os.ReadFile(e.daemon.Log)
	return string(b)
}

// stopDaemon stops the daemon with SIGTERM.
func (e *env) stopDaemon() {
	e.t.Helper()
	e.stopProc(e.daemon)
}

func (e *env) startContainerd() {
	e.t.Helper()
	ctrdCfg := filepath.Join(e.dir, "containerd.toml")
	writeFile(e.t, ctrdCfg, harness.ContainerdConfig(e.ctrdDir(), e.sock, e.cfg.Address))
	e.ctrd = e.start("containerd", "containerd.log", nil, filepath.Join(e.tools, "containerd"), "--config", ctrdCfg)
	e.waitFor("containerd", 90*time.Second, e.ctrd, func() bool {
		_, err := e.ctrErr("version")
		return err == nil
	})
}

func (e *env) ctrdDir() string { return filepath.Join(e.dir, "containerd") }

// ctrdState is containerd's state directory, a tmpfs on a real host.
func (e *env) ctrdState() string { return harness.ContainerdState(e.ctrdDir()) }

func (e *env) waitFor(what string, timeout time.Duration, p *proc, ready func() bool) {
	e.t.Helper()
	p.WaitFor(e.t, what, timeout, ready)
}

// stopProc stops p unless it already exited (a daemon killed at a
// failpoint has nothing left to stop).
func (e *env) stopProc(p *proc) {
	if p != nil && !p.Exited() {
		p.Stop(e.t)
	}
}

func (e *env) stop() {
	e.stopProc(e.ctrd)
	e.stopProc(e.daemon)
	if e.t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(e.dir, "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			e.t.Logf("===== %s =====\n%s", filepath.Base(l), tail(string(b), 80))
		}
	}
	if err := harness.RemovePool(context.Background(), e.poolConfig()); err != nil {
		e.t.Errorf("removing pool: %v", err)
	}
}

func tail(s string, lines int) string { return harness.Tail(s, lines) }

func (e *env) run(name string, args ...string) (string, error) {
	return e.runEnv(nil, name, args...)
}

// runEnv runs a command with the env's PATH and extra environment.
func (e *env) runEnv(extra []string, name string, args ...string) (string, error) {
	return harness.Run(cmdTimeout, e.path, extra, name, args...)
}

func (e *env) ctrErr(args ...string) (string, error) {
	return e.ctrNS(namespace, args...)
}

// ctrNS runs ctr in containerd namespace ns.
func (e *env) ctrNS(ns string, args ...string) (string, error) {
	return e.run(filepath.Join(e.tools, "ctr"), append([]string{"--address", e.sock, "--namespace", ns}, args...)...)
}

func (e *env) ctr(args ...string) string {
	e.t.Helper()
	out, err := e.ctrErr(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// fim runs our command with the S3 server's credentials, which
// push-layers (and offline commands) need.
func (e *env) fim(args ...string) (string, error) {
	return e.runEnv(e.s3.Env(), e.bin, append([]string{"--config", e.cfgPath}, args...)...)
}

// sn is a snapshots client straight to the daemon's socket: the calls
// containerd makes, without containerd's own bookkeeping in between.
func (e *env) sn() snapshots.Snapshotter {
	e.t.Helper()
	conn, err := grpc.NewClient("unix://"+e.cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "flyio")
}

// meta opens the metadata read-only; the daemon must be stopped.
func (e *env) meta() *metadata.Store {
	e.t.Helper()
	st, err := metadata.Open(e.metaPath(), metadata.Options{ReadOnly: true, LockTimeout: 5 * time.Second})
	if err != nil {
		e.t.Fatal(err)
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
func (e *env) put(im image) { e.s3.PutObject(e.t, im.key, im.data) }

// processImage runs `flyio-image-manager process-image` and waits for it.
func (e *env) processImage(im image) (string, error) {
	return e.fim("process-image", "--s3-key", im.key, "--image-id", im.id())
}

// checkImage runs a container from an imported image and checks its
// marker and filler.
func (e *env) checkImage(im image, id string) {
	e.t.Helper()
	out := e.ctr("run", "--rm", "--snapshotter", "flyio", im.ref(), id, "/bin/sh", "-c", "cat /marker; md5sum /filler")
	want := im.marker + "\n" + im.sum + "  /filler\n"
	if out != want {
		e.t.Errorf("container %s of %s printed:\n%s\nwant:\n%s", id, im.ref(), out, want)
	}
}

// poolConfig is the daemon's dmpool.Config (daemon.PoolConfig;
// repeated so this package builds while the daemon package is in flux).
func (e *env) poolConfig() dmpool.Config {
	p := e.cfg.Pool
	return dmpool.Config{
		Name: p.Name, DataDevice: p.DataDevice, MetadataDevice: p.MetadataDevice,
		DataFile: p.DataFile, MetadataFile: p.MetadataFile,
		DataSize: int64(p.DataSize), MetadataSize: int64(p.MetadataSize),
		BlockSize: uint32(p.BlockSize), LowWaterMark: p.LowWaterMark,
	}
}

func (e *env) metaPath() string { return filepath.Join(e.cfg.RootDir, "metadata.db") }
