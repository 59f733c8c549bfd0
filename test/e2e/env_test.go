package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/daemon"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/harness"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// namespace is the containerd namespace every test works in.
const namespace = "test"

// cmdTimeout bounds one ctr/registry command; TCG is slow, but nothing
// here should take minutes.
const cmdTimeout = 3 * time.Minute

var poolSeq atomic.Int32

// flyioBin is our binary, built on the host (make / go build -o bin/...).
func flyioBin(t *testing.T) string { return harness.FlyioBin(t) }

// toolsBin holds containerd, ctr, the runc shim (test/tools.sh).
func toolsBin(t *testing.T) string { return harness.ToolsBin(t) }

// env is our daemon on a fresh loopback pool plus a private containerd
// using it as the "flyio" proxy snapshotter.
type env struct {
	t        *testing.T
	dir      string
	bin      string
	tools    string
	cfgPath  string
	cfg      config.Config
	sock     string // containerd's
	path     string // PATH for containerd, ctr and the shim
	daemon   *proc
	ctrd     *proc
	stopOnce bool
	opts     envOptions
}

// envOptions adjust startEnv; see the with* functions.
type envOptions struct {
	baseSize   string   // [snapshotter] base_size, default "256MiB"
	dataSize   string   // [pool] data_size, default "6GiB"
	poolTOML   string   // more [pool] keys
	spares     int      // [snapshotter] spare_devices, default the product's
	daemonTOML string   // appended to the daemon's config (e.g. an [s3] table)
	snapTOML   string   // more [snapshotter] keys
	daemonEnv  []string // extra environment of the daemon (e.g. AWS credentials)
	// containerdTOML, when set, writes containerd's configuration
	// instead of harness.ContainerdConfig (e.g. with CRI on).
	containerdTOML func(e *env) string
}

type envOption func(*envOptions)

// withBaseSize sets the size of parentless snapshots (process-image bases).
func withBaseSize(s string) envOption { return func(o *envOptions) { o.baseSize = s } }

// withDataSize sets the size of the pool's data file.
func withDataSize(s string) envOption { return func(o *envOptions) { o.dataSize = s } }

// withPoolTOML adds keys to the daemon's [pool] table.
func withPoolTOML(s string) envOption { return func(o *envOptions) { o.poolTOML += "\n" + s } }

// withSpares sets how many spare devices the daemon keeps ready; 0 makes
// every device the pool holds belong to a snapshot, for exact accounting.
func withSpares(n int) envOption { return func(o *envOptions) { o.spares = n } }

// withDaemonTOML appends tables to the daemon's configuration.
func withDaemonTOML(s string) envOption { return func(o *envOptions) { o.daemonTOML += "\n" + s } }

// withSnapshotterTOML adds keys to the daemon's [snapshotter] table.
func withSnapshotterTOML(s string) envOption { return func(o *envOptions) { o.snapTOML += "\n" + s } }

// withDaemonEnv adds KEY=VALUE pairs to the daemon's environment.
func withDaemonEnv(kv ...string) envOption {
	return func(o *envOptions) { o.daemonEnv = append(o.daemonEnv, kv...) }
}

// proc is a background process whose output goes to a log file.
type proc = harness.Proc

func startEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	// Every env needs dm-thin: skip on a plain host, fail in the VM.
	dmtest.Require(t)
	e := &env{t: t, dir: t.TempDir(), bin: flyioBin(t), tools: toolsBin(t), opts: envOptions{baseSize: "256MiB", dataSize: "6GiB", spares: config.Default().Snapshotter.SpareDevices}}
	for _, o := range opts {
		o(&e.opts)
	}
	e.sock = filepath.Join(e.dir, "containerd.sock")
	e.path = harness.ToolsPath(e.tools)
	pool := fmt.Sprintf("fim-e2e-%d-%d", os.Getpid(), poolSeq.Add(1))
	e.cfgPath = filepath.Join(e.dir, "flyio.toml")
	writeFile(t, e.cfgPath, fmt.Sprintf(`root_dir = %q
address = %q
admin_address = %q
[pool]
name = %q
data_size = %q
metadata_size = "64MiB"
%s
[snapshotter]
base_size = %q
spare_devices = %d
%s
[containerd]
address = %q
namespace = %q
%s
`, filepath.Join(e.dir, "flyio"), filepath.Join(e.dir, "snapshotter.sock"), filepath.Join(e.dir, "admin.sock"), pool,
		e.opts.dataSize, e.opts.poolTOML, e.opts.baseSize, e.opts.spares, e.opts.snapTOML, e.sock, namespace, e.opts.daemonTOML))
	cfg, err := config.Load(e.cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	// Registered before the processes start so a failed start still
	// stops whatever did start and shows its log.
	t.Cleanup(e.stop)

	e.daemon = e.start("daemon", exec.Command(e.bin, "--config", e.cfgPath, "daemon"), e.opts.daemonEnv...)
	e.waitFor("the daemon's socket", 60*time.Second, e.daemon, func() bool {
		_, err := os.Stat(cfg.Address)
		return err == nil
	})

	ctrdCfg := filepath.Join(e.dir, "containerd.toml")
	ctrdTOML := harness.ContainerdConfig(filepath.Join(e.dir, "containerd"), e.sock, cfg.Address)
	if e.opts.containerdTOML != nil {
		ctrdTOML = e.opts.containerdTOML(e)
	}
	writeFile(t, ctrdCfg, ctrdTOML)
	e.ctrd = e.start("containerd", exec.Command(filepath.Join(e.tools, "containerd"), "--config", ctrdCfg))
	e.waitFor("containerd", 90*time.Second, e.ctrd, func() bool {
		_, err := e.ctrErr("version")
		return err == nil
	})
	return e
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *env) start(name string, cmd *exec.Cmd, extraEnv ...string) *proc {
	e.t.Helper()
	return harness.StartProc(e.t, name, filepath.Join(e.dir, name+".log"), e.path, cmd, extraEnv...)
}

// waitFor polls ready, failing early when p exits.
func (e *env) waitFor(what string, timeout time.Duration, p *proc, ready func() bool) {
	e.t.Helper()
	p.WaitFor(e.t, what, timeout, ready)
}

// stopProc sends SIGTERM and waits, then SIGKILL.
func (e *env) stopProc(p *proc) { p.Stop(e.t) }

// stopServices stops containerd, then the daemon (containerd first: it
// may still talk to the snapshotter while shutting down).
func (e *env) stopServices() {
	e.stopProc(e.ctrd)
	e.ctrd = nil
	e.stopProc(e.daemon)
	e.daemon = nil
}

func (e *env) stop() {
	e.stopServices()
	if err := harness.RemovePool(context.Background(), daemon.PoolConfig(e.cfg)); err != nil {
		e.t.Errorf("removing pool: %v", err)
	}
	if e.t.Failed() {
		for _, name := range []string{"daemon", "containerd"} {
			b, _ := os.ReadFile(filepath.Join(e.dir, name+".log"))
			e.t.Logf("===== %s log =====\n%s", name, tail(string(b), 300))
		}
	}
}

func tail(s string, lines int) string { return harness.Tail(s, lines) }

// run runs a command with the env's PATH and returns combined output.
func (e *env) run(name string, args ...string) (string, error) {
	return harness.Run(cmdTimeout, e.path, nil, name, args...)
}

func (e *env) ctrErr(args ...string) (string, error) {
	return e.run(filepath.Join(e.tools, "ctr"), append([]string{"--address", e.sock, "--namespace", namespace}, args...)...)
}

// ctr runs ctr against the private containerd and fails the test on error.
func (e *env) ctr(args ...string) string {
	e.t.Helper()
	out, err := e.ctrErr(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// status runs `flyio-image-manager status`.
func (e *env) status() string {
	e.t.Helper()
	out, err := e.run(e.bin, "--config", e.cfgPath, "status")
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// usedBlocks parses the data line of status.
func usedBlocks(t *testing.T, status string) uint64 {
	t.Helper()
	for _, l := range strings.Split(status, "\n") {
		var used, total uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "data: %d/%d blocks used", &used, &total); err == nil {
			return used
		}
	}
	t.Fatalf("no 'data: N/M blocks used' line in status:\n%s", status)
	return 0
}

// writeImage builds the test image archive and returns its path.
func (e *env) writeImage(ref string) string {
	e.t.Helper()
	img, err := ociarchive.TestImage(ref, ociarchive.BusyboxPath)
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.dir, "image.tar")
	f, err := os.Create(path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if err := ociarchive.Write(f, img); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// importImage imports the test image into the flyio snapshotter.
func (e *env) importImage(ref string) {
	e.t.Helper()
	start := time.Now()
	e.ctr("images", "import", "--snapshotter", "flyio", e.writeImage(ref))
	e.t.Logf("imported %s in %s", ref, time.Since(start).Round(time.Millisecond))
}

// logTree logs the flyio snapshot chain.
func (e *env) logTree() {
	e.t.Helper()
	e.t.Logf("ctr snapshots --snapshotter flyio tree:\n%s", e.ctr("snapshots", "--snapshotter", "flyio", "tree"))
}

// freePort returns a TCP port on 127.0.0.1 nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// activeThins lists the active dm devices of our pool by name (thin
// devices are named <pool>-thin-<id>).
func activeThins(t *testing.T, pool string) []string {
	t.Helper()
	ents, err := os.ReadDir("/dev/mapper")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), pool+"-thin-") {
			out = append(out, e.Name())
		}
	}
	return out
}
