package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

// RequireEnv, when "1", turns a missing versitygw into a test failure instead
// of a skip. The VM and CI set it so the real-server tests cannot silently
// vanish.
const RequireEnv = "FLYIO_REQUIRE_S3"

// VersityGWVersion is the gateway version the tests are written against:
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
const VersityGWVersion = "v1.8.0"

// Server is a running versitygw gateway with a posix backend in a temporary
// directory and one empty bucket.
type Server struct {
	Endpoint  string // "http://127.0.0.1:PORT"
	AccessKey string
	SecretKey string
	Region    string
	Bucket    string
	Dir       string // backend root; the bucket is Dir/Bucket

	cmd  *exec.Cmd
	logs *syncBuffer
}

// FindVersityGW returns the path of the versitygw binary from PATH,
// $GOPATH/bin or ~/go/bin.
func FindVersityGW() (string, bool) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, true
	}
	var dirs []string
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, d := range filepath.SplitList(gp) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if gb := os.Getenv("GOBIN"); gb != "" {
		dirs = append(dirs, gb)
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// Start runs versitygw for the test, creates a bucket and stops the gateway
// in t.Cleanup. Without versitygw the test is skipped, or fails when
// FLYIO_REQUIRE_S3=1. It does not touch the environment, so it is safe in
// parallel tests; see SetEnv.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, ok := FindVersityGW()
	if !ok {
		msg := "versitygw not found in PATH or $GOPATH/bin (go install github.com/versity/versitygw/cmd/versitygw@" + VersityGWVersion + ")"
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(msg + "; " + RequireEnv + "=1")
		}
		t.Skip(msg)
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("finding a free port for versitygw: %v", err)
	}
	s := &Server{
		Endpoint:  fmt.Sprintf("http://127.0.0.1:%d", port),
		AccessKey: "s3testaccess",
		SecretKey: "s3testsecret0123456789",
		Region:    "us-east-1",
		Bucket:    "flyio-test-images",
		Dir:       t.TempDir(),
		logs:      &syncBuffer{},
	}
	// Global flags precede the backend subcommand; the posix backend
	// takes the root directory as its argument.
	s.cmd = exec.Command(bin,
		"--port", fmt.Sprintf("127.0.0.1:%d", port),
		"--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", s.Region,
		"--quiet",
		"posix", s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("versitygw output:\n%s", s.logs.String())
		}
	})
	if err := s.waitReady(exited, 30*time.Second); err != nil {
		t.Fatalf("versitygw on %s: %v\n%s", s.Endpoint, err, s.logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.S3().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.Bucket}); err != nil {
		t.Fatalf("creating bucket %s on versitygw: %v\n%s", s.Bucket, err, s.logs.String())
	}
	return s
}

func (s *Server) waitReady(exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited during startup")
		default:
		}
		// Any HTTP answer (an anonymous request gets 403) means it serves.
		if resp, err := hc.Get(s.Endpoint + "/"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not serving after %v", timeout)
}

// Credentials returns static credentials for the gateway's root account.
func (s *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, "")
}

// Config returns an s3fetch configuration for the gateway's bucket, with
// small parts and quick retries suited to tests.
func (s *Server) Config() s3fetch.Config {
	return ConfigFor(s.Endpoint, s.Region, s.Bucket)
}

// ConfigFor returns a test s3fetch configuration for any endpoint, e.g. a
// Proxy or a Fake.
func ConfigFor(endpoint, region, bucket string) s3fetch.Config {
	cfg := s3fetch.DefaultConfig()
	cfg.Endpoint, cfg.Region, cfg.Bucket = endpoint, region, bucket
	cfg.PathStyle = true
	cfg.PartSize = 64 << 10
	cfg.Concurrency = 4
	cfg.DownloadTimeout = 60
	cfg.PartTimeout = 5
	cfg.RetryBaseDelay = 0.01
	cfg.RetryMaxDelay = 0.1
	return cfg
}

// Client returns an s3fetch client for cfg using the gateway's credentials.
func (s *Server) Client(t testing.TB, cfg s3fetch.Config) *s3fetch.Client {
	t.Helper()
	c, err := s3fetch.New(context.Background(), cfg, s3fetch.WithCredentials(s.Credentials()))
	if err != nil {
		t.Fatalf("s3fetch.New: %v", err)
	}
	return c
}

// S3 returns a raw SDK client for the gateway, for test setup that s3fetch
// does not offer (CreateBucket, DeleteObject...).
func (s *Server) S3() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  s.Credentials(),
	})
}

// Env returns environment variables that make the AWS SDK default chain in
// a child process (e.g. the CLI under test) use this gateway's credentials.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// SetEnv sets Env in this process for the rest of the test, for code that
// builds its client from the default chain. Not usable in parallel tests.
func (s *Server) SetEnv(t testing.TB) {
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// PutObject stores data under key directly on the gateway (not through any
// proxy) and returns its ETag.
func (s *Server) PutObject(t testing.TB, key string, data []byte) string {
	t.Helper()
	out, err := s.S3().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &s.Bucket, Key: &key, Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("putting %s on versitygw: %v", key, err)
	}
	return aws.ToString(out.ETag)
}

// Logs returns the gateway's output so far.
func (s *Server) Logs() string { return s.logs.String() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
