package diag

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIsSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"AWS_SECRET_ACCESS_KEY": true, "AWS_ACCESS_KEY_ID": true, "AWS_REGION": true, "AWS_SESSION_TOKEN": true,
		"secret_key": true, "password": true, "GITHUB_TOKEN": true, "api_key": true, "sshkey": true,
		"bucket": false, "endpoint": false, "prefix": false, "layer_prefix": false, "PATH": false,
		"address": false, "UNPACK_TIMEOUT": false, "region": false,
	} {
		if got := IsSecretName(name); got != want {
			t.Errorf("IsSecretName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRedactConfig(t *testing.T) {
	type s3 struct {
		Bucket    string `toml:"bucket"`
		Endpoint  string `toml:"endpoint"`
		SecretKey string `toml:"secret_key"`
		Token     string `toml:"session_token"`
		Retries   int    `toml:"max_retries"`
	}
	type cfg struct {
		RootDir string `toml:"root_dir"`
		S3      s3     `toml:"s3"`
	}
	out, err := RedactConfig(cfg{RootDir: "/var/lib/x", S3: s3{
		Bucket: "images", Endpoint: "https://AKIAUSER:hunter2pass@s3.example.com", SecretKey: "wJalrXUtnFEMI", Token: "tok123456", Retries: 5,
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	for _, secret := range []string{"wJalrXUtnFEMI", "tok123456", "hunter2pass", "AKIAUSER"} {
		if strings.Contains(got, secret) {
			t.Errorf("redacted config still holds %q:\n%s", secret, got)
		}
	}
	for _, keep := range []string{"root_dir = '/var/lib/x'", "bucket = 'images'", "max_retries = 5", "secret_key = '<redacted>'", "s3.example.com"} {
		if !strings.Contains(got, keep) {
			t.Errorf("redacted config lacks %q:\n%s", keep, got)
		}
	}
}

func TestRedactEnvKeepsNames(t *testing.T) {
	env := []string{"PATH=/usr/bin", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG", "AWS_REGION=us-east-1", "HTTPS_PROXY=http://u:pw1234567@proxy:3128", "DOWNLOAD_TIMEOUT=30"}
	got := string(RedactEnv(env))
	want := "AWS_REGION=<redacted>\nAWS_SECRET_ACCESS_KEY=<redacted>\nDOWNLOAD_TIMEOUT=30\nHTTPS_PROXY=http://<redacted>@proxy:3128\nPATH=/usr/bin\n"
	if got != want {
		t.Errorf("RedactEnv =\n%s\nwant\n%s", got, want)
	}
}

func TestScrubberRemovesSecretsEverywhere(t *testing.T) {
	sc := NewScrubber([]string{"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG", "AWS_REGION=us", "PATH=/bin"})
	files := sc.Files([]File{{Name: "daemon.log", Data: []byte("signing with wJalrXUtnFEMIK7MDENG in us-east-1 via /bin\n")}})
	if got, want := string(files[0].Data), "signing with <redacted> in us-east-1 via /bin\n"; got != want {
		t.Errorf("scrubbed = %q, want %q (short values stay)", got, want)
	}
}

func TestCollectWritesErrorNotes(t *testing.T) {
	files := Collect(context.Background(), []Source{
		Text("a.txt", "a\n"),
		{Name: "b.txt", Gather: func(context.Context) ([]byte, error) { return nil, errors.New("no pool") }},
		{Name: "c.txt", Gather: func(context.Context) ([]byte, error) { return []byte("partial"), errors.New("half") }},
		{Name: "d.txt", Gather: func(context.Context) ([]byte, error) { panic("boom") }},
	})
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	if want := []string{"a.txt", "b.txt.error", "c.txt", "c.txt.error", "d.txt.error"}; !slices.Equal(names, want) {
		t.Fatalf("files = %v, want %v", names, want)
	}
	if got := string(files[1].Data); !strings.Contains(got, "b.txt") || !strings.Contains(got, "no pool") {
		t.Errorf("error note = %q", got)
	}
	if got := string(files[4].Data); !strings.Contains(got, "panic: boom") {
		t.Errorf("panic note = %q", got)
	}
}

func TestBundleFileList(t *testing.T) {
	now := time.Date(2026, 11, 26, 7, 30, 5, 0, time.UTC)
	name := FileName("node-1", now)
	if name != "flyio-image-manager-diag-node-1-20261126T073005Z.tar.gz" {
		t.Errorf("FileName = %s", name)
	}
	files := Collect(context.Background(), Sources(Inputs{
		GatheredBy: "test", Version: "v1", Pool: "no-such-pool-for-test", Config: map[string]any{"root_dir": "/x"},
		Environ: []string{"AWS_SECRET_ACCESS_KEY=abcdefgh"},
		Log:     Text("daemon.log", "line\n"),
		Runs:    func(context.Context) (any, error) { return []string{}, nil },
	}))
	var buf bytes.Buffer
	dir := strings.TrimSuffix(name, ".tar.gz")
	if err := Write(&buf, dir, files, now); err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var got []string
	contents := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(h.Name, dir+"/")
		got = append(got, rel)
		b, _ := io.ReadAll(tr)
		contents[rel] = string(b)
	}
	// Without dm (here) the dm parts are error notes, but every part is
	// there in one form or the other.
	for _, want := range []string{"MANIFEST.txt", "gathered-by.txt", "version.txt", "kernel.txt", "config.toml", "environment.txt", "daemon.log", "bolt-stats.json.error", "runs.json", "mounts.txt"} {
		if !slices.Contains(got, want) {
			t.Errorf("bundle lacks %s: %v", want, got)
		}
	}
	for _, part := range []string{"dm-version.txt", "pool.txt"} {
		if !slices.Contains(got, part) && !slices.Contains(got, part+ErrorSuffix) {
			t.Errorf("bundle has neither %s nor its error note: %v", part, got)
		}
	}
	if got[0] != "MANIFEST.txt" {
		t.Errorf("first file is %s, want MANIFEST.txt", got[0])
	}
	if !strings.Contains(contents["MANIFEST.txt"], "could not be gathered") || !strings.Contains(contents["MANIFEST.txt"], "daemon.log") {
		t.Errorf("manifest:\n%s", contents["MANIFEST.txt"])
	}
	if strings.Contains(contents["environment.txt"], "abcdefgh") {
		t.Errorf("environment.txt holds the secret: %s", contents["environment.txt"])
	}
}
