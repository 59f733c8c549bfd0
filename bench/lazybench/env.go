package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
)

// namespace is the containerd namespace process-image registers into.
const namespace = "lazybench"

// cmdTimeout bounds one command: TCG is slow, but minutes mean a hang.
const cmdTimeout = 10 * time.Minute

// gateway is a versitygw serving one bucket from a posix directory (as
// bench/s3bench starts it: s3test wants a testing.TB).
type gateway struct {
	endpoint, access, secret, region, bucket string
	cmd                                      *exec.Cmd
}

func startGateway(ctx context.Context, bin, dir string) (*gateway, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	g := &gateway{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), access: "lazybenchaccess", secret: "lazybenchsecret0123456789",
		region: "us-east-1", bucket: "lazybench"}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	g.cmd = exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--access", g.access, "--secret", g.secret,
		"--region", g.region, "--quiet", "posix", dir)
	g.cmd.Stdout, g.cmd.Stderr = os.Stderr, os.Stderr
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; {
		if resp, err := hc.Get(g.endpoint + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, fmt.Errorf("versitygw not serving on %s after 60s", g.endpoint)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cl := s3.New(s3.Options{Region: g.region, BaseEndpoint: aws.String(g.endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(g.access, g.secret, "")})
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &g.bucket}); err != nil {
		g.stop()
		return nil, fmt.Errorf("creating bucket: %w", err)
	}
	return g, nil
}

func (g *gateway) stop() {
	g.cmd.Process.Signal(syscall.SIGTERM)
	g.cmd.Wait()
}

// env is our daemon on its own loopback pool and a private containerd
// with it as the "flyio" proxy snapshotter: what test/harness builds,
// written again here because benchmarks import no test package.
type env struct {
	dir, bin, tools, path string
	cfgPath               string
	cfg                   config.Config
	sock                  string // containerd's
	extra                 []string
	daemon, ctrd          *exec.Cmd
	daemonLog             string
}

func newEnv(dir, bin, tools string, g *gateway, prefetch int) (*env, error) {
	e := &env{dir: dir, bin: bin, tools: tools,
		path:    tools + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		cfgPath: filepath.Join(dir, "flyio.toml"), sock: filepath.Join(dir, "containerd.sock"),
		extra: []string{"AWS_ACCESS_KEY_ID=" + g.access, "AWS_SECRET_ACCESS_KEY=" + g.secret,
			"AWS_REGION=" + g.region, "AWS_EC2_METADATA_DISABLED=true"}}
	toml := fmt.Sprintf(`root_dir = %q
address = %q
admin_address = %q
[pool]
name = "lazybench-%d"
data_size = "8GiB"
metadata_size = "128MiB"
[snapshotter]
base_size = "768MiB"
[containerd]
address = %q
namespace = %q
[s3]
bucket = %q
region = %q
endpoint = %q
path_style = true
block_prefix = "blocks/"
[lazy]
prefetch = %d
`, filepath.Join(dir, "flyio"), filepath.Join(dir, "snapshotter.sock"), filepath.Join(dir, "admin.sock"),
		os.Getpid(), e.sock, namespace, g.bucket, g.region, g.endpoint, prefetch)
	if err := os.WriteFile(e.cfgPath, []byte(toml), 0o644); err != nil {
		return nil, err
	}
	cfg, err := config.Load(e.cfgPath, true)
	if err != nil {
		return nil, err
	}
	e.cfg = cfg
	return e, nil
}

// containerdTOML is test/harness's ContainerdConfig: root and state
// under dir, our daemon as the "flyio" proxy snapshotter the transfer
// service unpacks into, CRI off (ctr drives it; CRI only slows start).
func (e *env) containerdTOML() string {
	d := filepath.Join(e.dir, "containerd")
	return fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[proxy_plugins.flyio]
  type = "snapshot"
  address = %q
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = "flyio"
`, filepath.Join(d, "root"), filepath.Join(d, "state"), e.sock, e.sock+".ttrpc", e.cfg.Address)
}

func (e *env) startProc(name string, args ...string) (*exec.Cmd, string, error) {
	log := filepath.Join(e.dir, name+".log")
	f, err := os.Create(log)
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), "PATH="+e.path), e.extra...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { cmd.Wait(); f.Close() }()
	return cmd, log, nil
}

// start starts the daemon, waits for both its sockets, then containerd,
// and waits until ctr reaches it.
func (e *env) start() error {
	var err error
	if e.daemon, e.daemonLog, err = e.startProc("daemon", e.bin, "--config", e.cfgPath, "daemon"); err != nil {
		return err
	}
	if err := waitFor("the daemon", 90*time.Second, e.daemon, func() bool {
		for _, s := range []string{e.cfg.Address, e.cfg.AdminAddress} {
			c, err := net.Dial("unix", s)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	}); err != nil {
		return err
	}
	ctrdCfg := filepath.Join(e.dir, "containerd.toml")
	if err := os.WriteFile(ctrdCfg, []byte(e.containerdTOML()), 0o644); err != nil {
		return err
	}
	if e.ctrd, _, err = e.startProc("containerd", filepath.Join(e.tools, "containerd"), "--config", ctrdCfg); err != nil {
		return err
	}
	return waitFor("containerd", 120*time.Second, e.ctrd, func() bool {
		_, err := e.ctr("version")
		return err == nil
	})
}

func waitFor(what string, timeout time.Duration, p *exec.Cmd, ready func() bool) error {
	for deadline := time.Now().Add(timeout); !ready(); time.Sleep(200 * time.Millisecond) {
		if p.ProcessState != nil {
			return fmt.Errorf("%s exited before it was ready: %s", what, p.ProcessState)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", what, timeout)
		}
	}
	return nil
}

// stop stops containerd, then the daemon (containerd may still talk to
// the snapshotter while it shuts down), then removes the pool as
// test/harness's RemovePool does. Best effort: the VM is thrown away.
func (e *env) stop(ctx context.Context) {
	e.stopProcs()
	p := e.cfg.Pool
	pc := dmpool.Config{Name: p.Name, DataFile: p.DataFile, MetadataFile: p.MetadataFile,
		DataSize: int64(p.DataSize), MetadataSize: int64(p.MetadataSize), BlockSize: uint32(p.BlockSize)}
	if info, err := dmpool.GetDeviceInfo(pc.Name); err != nil || !info.Exists {
		return
	}
	pool, _, err := dmpool.Open(ctx, pc)
	if err != nil {
		logf("tear-down: %v", err)
		return
	}
	if active, err := pool.ListActive(ctx); err == nil {
		for _, d := range active {
			if err := pool.Deactivate(ctx, d.Name); err != nil {
				logf("tear-down: %v", err)
			}
		}
	}
	if err := pool.Remove(ctx); err != nil {
		logf("tear-down: %v", err)
	}
}

// stopProcs stops containerd, then the daemon.
func (e *env) stopProcs() {
	for _, p := range []*exec.Cmd{e.ctrd, e.daemon} {
		if p == nil || p.Process == nil {
			continue
		}
		p.Process.Signal(syscall.SIGTERM)
		for i := 0; i < 300 && p.ProcessState == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		p.Process.Kill()
	}
}

// restartWith stops containerd and the daemon, adds lines to the
// daemon's config file's last section ([lazy]) and starts both again on
// the same pool.
func (e *env) restartWith(lines string) error {
	e.stopProcs()
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(lines); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return e.start()
}

// run runs name with args and returns the combined output; the error
// carries it.
func (e *env) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(os.Environ(), "PATH="+e.path), e.extra...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (e *env) fim(args ...string) (string, error) {
	return e.run(e.bin, append([]string{"--config", e.cfgPath}, args...)...)
}

func (e *env) ctrArgs(args ...string) []string {
	return append([]string{"--address", e.sock, "--namespace", namespace}, args...)
}

func (e *env) ctr(args ...string) (string, error) {
	return e.run(filepath.Join(e.tools, "ctr"), e.ctrArgs(args...)...)
}

// firstLine runs ctr with args and returns how long after start its
// first line of output came, that line, and the whole output once it
// exited.
func (e *env) firstLine(start time.Time, args ...string) (time.Duration, string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.tools, "ctr"), e.ctrArgs(args...)...)
	cmd.Env = append(os.Environ(), "PATH="+e.path)
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return 0, "", "", err
	}
	br := bufio.NewReader(out)
	line, rerr := br.ReadString('\n')
	took := time.Since(start)
	rest, _ := br.ReadString(0)
	werr := cmd.Wait()
	all := line + rest + errBuf.String()
	if werr != nil {
		return 0, "", all, fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), werr, all)
	}
	if rerr != nil {
		return 0, "", all, fmt.Errorf("ctr %s printed no line: %v\n%s", strings.Join(args, " "), rerr, all)
	}
	return took, line, all, nil
}

// deleteImage runs delete-image until the base has no dependents left
// (the container's snapshot goes a moment after ctr run --rm returns),
// as the e2e helper does.
func (e *env) deleteImage(id string) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := e.fim("delete-image", "--image-id", id)
		if err == nil {
			return nil
		}
		if !strings.Contains(out, "FOREIGN KEY") || time.Now().After(deadline) {
			return fmt.Errorf("delete-image %s: %w", id, err)
		}
		time.Sleep(time.Second)
	}
}

func (e *env) status(ctx context.Context) (admin.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return admin.NewClient(e.cfg.AdminAddress).Status(ctx)
}

// logTail is the last n lines of the daemon's log.
func (e *env) logTail(n int) string {
	b, _ := os.ReadFile(e.daemonLog)
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func credsOf(g *gateway) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(g.access, g.secret, "")
}
