package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
)

// TestDiagOffline runs diag with no daemon (and, here, no device-mapper):
// the bundle is still written, every part is there or has its error
// note, and the secret in the environment appears in no file.
func TestDiagOffline(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte("root_dir = \""+filepath.Join(dir, "root")+"\"\nadmin_address = \""+filepath.Join(dir, "admin.sock")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "diag-offline-secret-9a7b3c"
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	if err := app.Run([]string{"flyio-image-manager", "--config", cfgPath, "diag", "--output", dir}); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "flyio-image-manager-diag-*.tar.gz"))
	if len(matches) != 1 {
		t.Fatalf("bundles in %s: %v; output:\n%s", dir, matches, out.String())
	}
	if !strings.Contains(out.String(), "wrote "+matches[0]) {
		t.Errorf("output does not name the bundle:\n%s", out.String())
	}
	f, err := os.Open(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	have := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		_, name, _ := strings.Cut(h.Name, "/")
		have[name] = true
		if strings.Contains(string(b), secret) {
			t.Errorf("%s holds the secret", name)
		}
		if name == "environment.txt" && !strings.Contains(string(b), "AWS_SECRET_ACCESS_KEY=<redacted>") {
			t.Errorf("environment.txt does not name the redacted variable:\n%s", b)
		}
	}
	for _, part := range []string{"MANIFEST.txt", "diag-command.txt", "version.txt", "kernel.txt", "config.toml", "environment.txt", "dm-version.txt", "pool.txt", "daemon.log", "bolt-stats.json", "gc-dry-run.txt", "mounts.txt"} {
		if !have[part] && !have[part+".error"] {
			t.Errorf("bundle has neither %s nor %s.error: %v", part, part, have)
		}
	}
}

// TestDiagOfflineRecordsMetadataSnapHold: diag without a daemon reads the
// pool's usage from a metadata snapshot; it opens the records through
// service, as gc --dry-run does, so that read records its hold for the
// next daemon start or gc --force to release if diag is killed in it.
func TestDiagOfflineRecordsMetadataSnapHold(t *testing.T) {
	cfg := config.Default()
	cfg.RootDir = t.TempDir()
	st, err := metadata.Open(service.MetadataPath(cfg), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	thinmeta.SetMarker("")
	t.Cleanup(func() { thinmeta.SetMarker("") })
	offlineDiagSources(context.Background(), cfg, errors.New("no daemon"))
	if got, want := thinmeta.Marker(), filepath.Join(cfg.RootDir, thinmeta.MarkerName); got != want {
		t.Errorf("offline diag records holds in %q, want %q", got, want)
	}
}
