package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/harness"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// namespace is the containerd namespace every test works in.
const namespace = harness.Namespace

// cmdTimeout bounds one command of a test.
const cmdTimeout = harness.CmdTimeout

var poolSeq atomic.Int32

var (
	flyioBin  = harness.FlyioBin // our binary, built on the host
	toolsBin  = harness.ToolsBin // containerd, ctr, the runc shim (test/tools.sh)
	writeFile = harness.WriteFile
	tail      = harness.Tail
)

// env is our daemon on a fresh loopback pool plus a private containerd
// using it as the "flyio" proxy snapshotter (harness.Env), started with
// the options that made it.
type env struct {
	*harness.Env
	opts envOptions
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
	e := &env{opts: envOptions{baseSize: "256MiB", dataSize: "6GiB", spares: config.Default().Snapshotter.SpareDevices}}
	for _, o := range opts {
		o(&e.opts)
	}
	pool := fmt.Sprintf("fim-e2e-%d-%d", os.Getpid(), poolSeq.Add(1))
	e.Env = harness.New(t, harness.Options{
		Pool:        fmt.Sprintf("name = %q\ndata_size = %q\nmetadata_size = \"64MiB\"\n%s", pool, e.opts.dataSize, e.opts.poolTOML),
		Snapshotter: fmt.Sprintf("base_size = %q\nspare_devices = %d\n%s", e.opts.baseSize, e.opts.spares, e.opts.snapTOML),
		Tables:      e.opts.daemonTOML,
		DaemonEnv:   e.opts.daemonEnv,
	})
	e.StartDaemon("daemon.log")
	e.WaitDaemon()
	if e.opts.containerdTOML != nil {
		e.StartContainerdWith(e.opts.containerdTOML(e))
	} else {
		e.StartContainerd()
	}
	return e
}

// status runs `flyio-image-manager status`.
func (e *env) status() string {
	e.T.Helper()
	out, err := e.Fim("status")
	if err != nil {
		e.T.Fatal(err)
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
	e.T.Helper()
	img, err := ociarchive.TestImage(ref, ociarchive.BusyboxPath)
	if err != nil {
		e.T.Fatal(err)
	}
	path := filepath.Join(e.Dir, "image.tar")
	f, err := os.Create(path)
	if err != nil {
		e.T.Fatal(err)
	}
	defer f.Close()
	if err := ociarchive.Write(f, img); err != nil {
		e.T.Fatal(err)
	}
	return path
}

// importImage imports the test image into the flyio snapshotter.
func (e *env) importImage(ref string) {
	e.T.Helper()
	start := time.Now()
	e.Ctr("images", "import", "--snapshotter", "flyio", e.writeImage(ref))
	e.T.Logf("imported %s in %s", ref, time.Since(start).Round(time.Millisecond))
}

// logTree logs the flyio snapshot chain.
func (e *env) logTree() {
	e.T.Helper()
	e.T.Logf("ctr snapshots --snapshotter flyio tree:\n%s", e.Ctr("snapshots", "--snapshotter", "flyio", "tree"))
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

// flyio runs our command with the env's configuration.
func (e *env) flyio(args ...string) (string, error) {
	return e.Fim(args...)
}

// gcReport runs gc with --json and decodes the report.
func (e *env) gcReport(args ...string) *gc.Report {
	e.T.Helper()
	out, err := e.flyio(append([]string{"gc", "--json", "--min-age", "0s"}, args...)...)
	if err != nil {
		e.T.Fatal(err)
	}
	var rep gc.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		e.T.Fatalf("gc --json output: %v\n%s", err, out)
	}
	return &rep
}
