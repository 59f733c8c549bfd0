package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/tarballgen"
	"github.com/superfly/flyio-image-manager/s3fetch"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// s3env is an env whose daemon reads images from a real versitygw through
// a recording proxy, so tests can count the GETs process-image makes.
type s3env struct {
	*env
	gw    *s3test.Server
	proxy *s3test.Proxy
	up    *s3fetch.Client // uploads, straight to the gateway
}

// startS3Env starts versitygw (from test/tools.sh's directory), a proxy in
// front of it, and an env whose daemon's [s3] points at the proxy.
func startS3Env(t *testing.T, opts ...envOption) *s3env {
	t.Helper()
	t.Setenv("PATH", toolsBin(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	gw := s3test.Start(t)
	proxy := s3test.NewProxy(t, gw.Endpoint)
	opts = append([]envOption{
		withDaemonTOML(fmt.Sprintf("[s3]\nbucket = %q\nregion = %q\nendpoint = %q\npath_style = true\n", gw.Bucket, gw.Region, proxy.URL)),
		withDaemonEnv(gw.Env()...),
	}, opts...)
	e := startEnv(t, opts...)
	upCfg := gw.Config()
	upCfg.PartSize = 16 << 20
	return &s3env{env: e, gw: gw, proxy: proxy, up: gw.Client(t, upCfg)}
}

// put uploads data under key.
func (s *s3env) put(key string, data []byte) {
	s.T.Helper()
	s.gw.PutObject(s.T, key, data)
}

// putBusybox uploads the busybox rootfs tarball whose /etc/hello is hello.
func (s *s3env) putBusybox(key, hello string) {
	s.T.Helper()
	var b bytes.Buffer
	if err := tarballgen.Busybox(&b, "/bin/busybox", hello); err != nil {
		s.T.Fatal(err)
	}
	s.put(key, b.Bytes())
}

// putGenerated streams a generated tarball into a multipart upload: it is
// never held in memory or on disk.
func (s *s3env) putGenerated(key string, spec tarballgen.Spec) tarballgen.Summary {
	s.T.Helper()
	start := time.Now()
	r, sum := tarballgen.Reader(spec)
	defer r.Close()
	cr := &countingReader{r: r}
	if _, err := s.up.Put(context.Background(), key, cr, -1); err != nil {
		s.T.Fatalf("uploading %s: %v", key, err)
	}
	s.T.Logf("uploaded %s: %d bytes (%s), %d files, %d bytes of content, in %s",
		key, cr.n, spec.Compression, sum.Files, sum.Bytes, time.Since(start).Round(time.Millisecond))
	return *sum
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// gets is how many GETs of key reached the gateway.
func (s *s3env) gets(key string) int { return len(s.proxy.GetsOf(s.gw.Bucket, key)) }

// processImage runs the process-image command and returns its output.
func (s *s3env) processImage(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Bin, append([]string{"--config", s.CfgPath, "process-image"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+s.Path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("process-image %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), err
}

var runLine = regexp.MustCompile(`(?m)^run (\S+): s3://`)

// runID is the run id process-image printed first.
func runID(t *testing.T, out string) string {
	t.Helper()
	m := runLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no 'run ID: s3://...' line in process-image output:\n%s", out)
	}
	return m[1]
}

func (s *s3env) admin() *admin.Client { return admin.NewClient(s.Cfg.AdminAddress) }

// waitRun polls run id until it finishes, logging state changes.
func (s *s3env) waitRun(id string, timeout time.Duration) admin.Run {
	s.T.Helper()
	return s.pollRun(id, timeout, func(r admin.Run) bool { return r.State.Finished() })
}

// pollRun polls run id until until(run) holds.
func (s *s3env) pollRun(id string, timeout time.Duration, until func(admin.Run) bool) admin.Run {
	s.T.Helper()
	start := time.Now()
	var last admin.RunState
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := s.admin().Run(ctx, id)
		cancel()
		if err != nil {
			s.T.Fatalf("run %s: %v", id, err)
		}
		if r.State != last {
			s.T.Logf("run %s: %s after %s (%d/%d bytes read, %d entries)", id, r.State, time.Since(start).Round(time.Millisecond), r.CompressedBytes, r.Size, r.Entries)
			last = r.State
		}
		if until(r) {
			return r
		}
		if time.Since(start) > timeout {
			s.T.Fatalf("run %s still %s after %s", id, r.State, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// importSnapshots lists flyio snapshots containerd knows whose key names an
// import run (flyio-import-*): active ones left behind by a failed run.
func (s *s3env) importSnapshots() []string {
	s.T.Helper()
	var out []string
	for _, l := range strings.Split(s.Ctr("snapshots", "--snapshotter", "flyio", "ls"), "\n") {
		if strings.Contains(l, "flyio-import-") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// killAndRestartDaemon kills the daemon with SIGKILL (no cleanup at all)
// and starts it again on the same configuration, keeping the old log.
func (s *s3env) killAndRestartDaemon() {
	s.T.Helper()
	p := s.Daemon
	s.T.Logf("daemon killed: %v", p.Kill())
	old, _ := os.ReadFile(p.Log)
	writeFile(s.T, filepath.Join(s.Dir, "daemon-killed.log"), string(old))
	s.StartDaemon("daemon.log")
	s.WaitDaemon()
}
