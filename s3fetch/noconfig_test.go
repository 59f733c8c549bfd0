package s3fetch_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

// TestNoBucketSaysSetIt: the default bucket is none, and an operation that
// needs one says which key to set.
func TestNoBucketSaysSetIt(t *testing.T) {
	cfg := s3fetch.DefaultConfig()
	if cfg.Bucket != "" {
		t.Fatalf("default bucket %q, want none", cfg.Bucket)
	}
	cl, err := s3fetch.New(context.Background(), cfg, s3fetch.WithCredentials(staticCreds{}))
	if err != nil {
		t.Fatalf("New with no bucket: %v (the daemon must run without one)", err)
	}
	_, err = cl.Stat(context.Background(), "images/a.tar")
	if !errors.Is(err, s3fetch.ErrNoBucket) || !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "set [s3] bucket") || strings.HasSuffix(err.Error(), "failed precondition") {
		t.Errorf("Stat with no bucket: %v", err)
	}
	if _, err := cl.List(context.Background(), "images/"); !errors.Is(err, s3fetch.ErrNoBucket) {
		t.Errorf("List with no bucket: %v", err)
	}
}

// TestMissingCredentialsNameTheVariables: with no credentials anywhere the
// error names the variables and the docs, not the SDK's chain, and the
// SDK's own log lines ("falling back to IMDSv1") never reach stderr.
func TestMissingCredentialsNameTheVariables(t *testing.T) {
	// An IMDS that refuses everything, as on a host with no instance role:
	// the SDK then warns on its logger before giving up.
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}))
	defer imds.Close()
	home := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
		"AWS_CONFIG_FILE": filepath.Join(home, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(home, "credentials"),
		"AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_EC2_METADATA_DISABLED": "", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.URL, "HOME": home,
	} {
		t.Setenv(k, v)
	}
	cfg := s3fetch.DefaultConfig()
	cfg.Bucket, cfg.Endpoint, cfg.PathStyle, cfg.MaxRetries = "b", imds.URL, true, 0

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	cl, err := s3fetch.New(context.Background(), cfg)
	if err == nil {
		_, err = cl.Stat(context.Background(), "images/a.tar")
	}
	os.Stderr = stderr
	w.Close()
	printed, _ := io.ReadAll(r)

	if !errors.Is(err, s3fetch.ErrNoCredentials) {
		t.Fatalf("Stat with no credentials: %v, want ErrNoCredentials", err)
	}
	for _, want := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "docs/QUICKSTART.md#4-s3-credentials", "s3://b/images/a.tar"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	for _, sdk := range []string{"get identity", "failed to refresh cached credentials", "ec2imds"} {
		if strings.Contains(err.Error(), sdk) {
			t.Errorf("error %q repeats the SDK's %q", err, sdk)
		}
	}
	if len(printed) != 0 {
		t.Errorf("the SDK wrote to stderr: %q", printed)
	}
}
