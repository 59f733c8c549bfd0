package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/containerd/containerd/v2/core/mount"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// gateway is a versitygw serving one bucket from a posix directory.
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
	g := &gateway{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), access: "s3benchaccess", secret: "s3benchsecret0123456789",
		region: "us-east-1", bucket: "s3bench"}
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

// device is a fresh thin device, formatted and mounted.
type device struct {
	pool *dmpool.Pool
	id   uint32
	name string
	path string
	dir  string
}

// newDevice creates thin id of size bytes; with fs it is formatted
// (inode tables initialised now, so no lazy init runs during a
// measurement) and mounted under dir.
func newDevice(ctx context.Context, pool *dmpool.Pool, id uint32, size uint64, dir string, fs bool) (*device, error) {
	d := &device{pool: pool, id: id, name: fmt.Sprintf("%s-bench-%d", pool.Name(), id)}
	if err := pool.CreateThin(ctx, id); err != nil {
		return nil, err
	}
	p, err := pool.Activate(ctx, d.name, id, size)
	if err != nil {
		pool.Delete(ctx, id)
		return nil, err
	}
	d.path = p
	if !fs {
		return d, nil
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", p).CombinedOutput(); err != nil {
		d.remove(ctx)
		return nil, fmt.Errorf("mkfs.ext4 %s: %v\n%s", p, err, out)
	}
	d.dir = filepath.Join(dir, d.name)
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		d.remove(ctx)
		return nil, err
	}
	if err := mount.All([]mount.Mount{{Type: "ext4", Source: p, Options: []string{"nosuid", "nodev"}}}, d.dir); err != nil {
		d.remove(ctx)
		return nil, err
	}
	return d, nil
}

func (d *device) remove(ctx context.Context) error {
	if d.dir != "" {
		if err := mount.UnmountAll(d.dir, 0); err != nil {
			return err
		}
		os.Remove(d.dir)
	}
	if err := d.pool.Deactivate(ctx, d.name); err != nil {
		return err
	}
	return d.pool.Delete(ctx, d.id)
}

func credsOf(g *gateway) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(g.access, g.secret, "")
}
