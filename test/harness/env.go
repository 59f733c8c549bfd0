package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
)

// Namespace is the containerd namespace the tests work in (and the one
// process-image registers images in).
const Namespace = "test"

// CmdTimeout bounds one ctr or flyio-image-manager command; TCG is slow,
// but nothing here should take minutes.
const CmdTimeout = 3 * time.Minute

// Env is our daemon on a test pool plus a private containerd using it as
// the "flyio" proxy snapshotter: the one environment test/e2e and
// test/crash build on. New writes the daemon's configuration; the suite
// starts the processes (StartDaemon, StartContainerd) when and as often
// as it needs, and Stop (registered by New) tears everything down.
type Env struct {
	T       *testing.T
	Dir     string // the test's temporary directory: config, logs, root_dir
	Bin     string // our binary
	Tools   string // containerd, ctr, the shim (test/tools.sh)
	Path    string // PATH for containerd, ctr and the shim
	CfgPath string
	Cfg     config.Config
	Sock    string // containerd's

	Daemon *Proc
	Ctrd   *Proc

	opts Options
}

// Options shape the daemon's configuration and the tear-down.
type Options struct {
	Pool        string // the [pool] table's keys
	Snapshotter string // the [snapshotter] table's keys
	Containerd  string // more [containerd] keys (address and namespace are set)
	Tables      string // more tables, appended (e.g. [s3])
	// DaemonEnv is added to the daemon's environment at every start;
	// CmdEnv to Fim's (e.g. S3 credentials for push-layers).
	DaemonEnv []string
	CmdEnv    []string
	// ExitedOK: a process that has already exited when it is stopped is
	// no failure (the crash tests kill the daemon on purpose). Without it
	// a daemon that died during the test fails the test at Stop.
	ExitedOK bool
	// LogTail is how many lines of each log Stop shows when the test
	// failed (default 300).
	LogTail int
}

// New writes the daemon's configuration under a fresh t.TempDir and
// registers Stop; it starts nothing.
func New(t *testing.T, o Options) *Env {
	t.Helper()
	if o.LogTail == 0 {
		o.LogTail = 300
	}
	e := &Env{T: t, Dir: t.TempDir(), Bin: FlyioBin(t), Tools: ToolsBin(t), opts: o}
	e.Path = ToolsPath(e.Tools)
	e.Sock = filepath.Join(e.Dir, "containerd.sock")
	e.CfgPath = filepath.Join(e.Dir, "flyio.toml")
	WriteFile(t, e.CfgPath, fmt.Sprintf(`root_dir = %q
address = %q
admin_address = %q
[pool]
%s
[snapshotter]
%s
[containerd]
address = %q
namespace = %q
%s
%s
`, filepath.Join(e.Dir, "flyio"), filepath.Join(e.Dir, "snapshotter.sock"), filepath.Join(e.Dir, "admin.sock"),
		o.Pool, o.Snapshotter, e.Sock, Namespace, o.Containerd, o.Tables))
	cfg, err := config.Load(e.CfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	e.Cfg = cfg
	// Registered before any process starts, so a failed start still
	// stops whatever did start and shows its log.
	t.Cleanup(e.Stop)
	return e
}

// WriteFile writes content to path or fails the test.
func WriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Start starts cmd with the env's PATH plus extraEnv, its output in
// Dir/NAME.log.
func (e *Env) Start(name string, cmd *exec.Cmd, extraEnv ...string) *Proc {
	e.T.Helper()
	return StartProc(e.T, name, filepath.Join(e.Dir, name+".log"), e.Path, cmd, extraEnv...)
}

// DaemonLog is what the daemon started last wrote so far ("" before
// any start).
func (e *Env) DaemonLog() string {
	if e.Daemon == nil {
		return ""
	}
	b, _ := os.ReadFile(e.Daemon.Log)
	return string(b)
}

// StartDaemon starts the daemon, its output in Dir/log, with DaemonEnv
// and extraEnv, and does not wait (a failpoint may kill it during
// start-up): see WaitDaemon. A daemon still running fails the test.
func (e *Env) StartDaemon(log string, extraEnv ...string) *Proc {
	e.T.Helper()
	if e.Daemon != nil && !e.Daemon.Exited() {
		e.T.Fatalf("daemon %s still running", e.Daemon.Log)
	}
	env := append(append([]string(nil), e.opts.DaemonEnv...), extraEnv...)
	e.Daemon = StartProc(e.T, "daemon", filepath.Join(e.Dir, log), e.Path, exec.Command(e.Bin, "--config", e.CfgPath, "daemon"), env...)
	return e.Daemon
}

// WaitDaemon waits until the daemon serves both sockets. A leftover
// socket file of a killed daemon is no proof, so it dials.
func (e *Env) WaitDaemon() {
	e.T.Helper()
	e.WaitFor("the daemon", 60*time.Second, e.Daemon, func() bool {
		for _, sock := range []string{e.Cfg.Address, e.Cfg.AdminAddress} {
			c, err := net.Dial("unix", sock)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
}

// StartContainerd starts containerd with ContainerdConfig and waits
// until ctr reaches it.
func (e *Env) StartContainerd() {
	e.T.Helper()
	e.StartContainerdWith(ContainerdConfig(e.ContainerdDir(), e.Sock, e.Cfg.Address))
}

// StartContainerdWith starts containerd with the configuration toml and
// waits until ctr reaches it.
func (e *Env) StartContainerdWith(toml string) {
	e.T.Helper()
	cfg := filepath.Join(e.Dir, "containerd.toml")
	WriteFile(e.T, cfg, toml)
	e.Ctrd = e.Start("containerd", exec.Command(filepath.Join(e.Tools, "containerd"), "--config", cfg))
	e.WaitFor("containerd", 90*time.Second, e.Ctrd, func() bool {
		_, err := e.CtrErr("version")
		return err == nil
	})
}

// ContainerdDir holds containerd's root and state.
func (e *Env) ContainerdDir() string { return filepath.Join(e.Dir, "containerd") }

// ContainerdState is containerd's state directory, a tmpfs on a real host.
func (e *Env) ContainerdState() string { return ContainerdState(e.ContainerdDir()) }

// WaitFor polls ready, failing early when p exits.
func (e *Env) WaitFor(what string, timeout time.Duration, p *Proc, ready func() bool) {
	e.T.Helper()
	p.WaitFor(e.T, what, timeout, ready)
}

// StopProc sends SIGTERM and waits, then SIGKILL. Nil is a no-op, and so
// is a process that already exited when Options.ExitedOK is set.
func (e *Env) StopProc(p *Proc) {
	e.T.Helper()
	if p == nil || (e.opts.ExitedOK && p.Exited()) {
		return
	}
	p.Stop(e.T)
}

// StopDaemon stops the daemon with SIGTERM.
func (e *Env) StopDaemon() {
	e.T.Helper()
	e.StopProc(e.Daemon)
}

// StopServices stops containerd, then the daemon (containerd first: it
// may still talk to the snapshotter while shutting down).
func (e *Env) StopServices() {
	e.T.Helper()
	e.StopProc(e.Ctrd)
	e.Ctrd = nil
	e.StopProc(e.Daemon)
	e.Daemon = nil
}

// Stop stops the services, shows every log of a failed test, and
// removes the pool.
func (e *Env) Stop() {
	e.StopServices()
	if e.T.Failed() {
		logs, _ := filepath.Glob(filepath.Join(e.Dir, "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			e.T.Logf("===== %s =====\n%s", filepath.Base(l), Tail(string(b), e.opts.LogTail))
		}
	}
	if err := RemovePool(context.Background(), e.PoolConfig()); err != nil {
		e.T.Errorf("removing pool: %v", err)
	}
}

// Run runs a command with the env's PATH and returns combined output.
func (e *Env) Run(name string, args ...string) (string, error) {
	return e.RunEnv(nil, name, args...)
}

// RunEnv runs a command with the env's PATH and extra environment.
func (e *Env) RunEnv(extra []string, name string, args ...string) (string, error) {
	return Run(CmdTimeout, e.Path, extra, name, args...)
}

// CtrErr runs ctr against the private containerd in Namespace.
func (e *Env) CtrErr(args ...string) (string, error) { return e.CtrNS(Namespace, args...) }

// CtrNS runs ctr in containerd namespace ns.
func (e *Env) CtrNS(ns string, args ...string) (string, error) {
	return e.Run(filepath.Join(e.Tools, "ctr"), append([]string{"--address", e.Sock, "--namespace", ns}, args...)...)
}

// Ctr runs ctr against the private containerd and fails the test on error.
func (e *Env) Ctr(args ...string) string {
	e.T.Helper()
	out, err := e.CtrErr(args...)
	if err != nil {
		e.T.Fatal(err)
	}
	return out
}

// Fim runs our command on the env's configuration with Options.CmdEnv.
func (e *Env) Fim(args ...string) (string, error) {
	return e.RunEnv(e.opts.CmdEnv, e.Bin, append([]string{"--config", e.CfgPath}, args...)...)
}

// PoolConfig is the dmpool.Config of the daemon's [pool], for tearing the
// pool down (the mapping of service.PoolConfig, kept here so the harness
// does not depend on the daemon package).
func (e *Env) PoolConfig() dmpool.Config {
	p := e.Cfg.Pool
	return dmpool.Config{
		Name: p.Name, DataDevice: p.DataDevice, MetadataDevice: p.MetadataDevice,
		DataFile: p.DataFile, MetadataFile: p.MetadataFile,
		DataSize: int64(p.DataSize), MetadataSize: int64(p.MetadataSize),
		BlockSize: uint32(p.BlockSize), LowWaterMark: p.LowWaterMark,
		SkipBlockZeroing: !p.ZeroNewBlocks,
	}
}
