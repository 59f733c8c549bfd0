package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/test/harness"
)

// TestInventory imports a busybox tarball from S3, creates a container on
// it, and checks what images, snapshots and diag report: the image with
// its dependant, the tree with device ids and real usage, and a bundle
// with dm, pool, log and bolt facts and no secret in any file, from the
// daemon and, once it is stopped, gathered by diag itself.
func TestInventory(t *testing.T) {
	dmtest.Require(t)
	const apiToken = "inventory-test-token-5f0c1e"
	s := startS3Env(t, withDaemonEnv("FLYIO_TEST_API_TOKEN="+apiToken))
	secrets := []string{s.gw.SecretKey, apiToken}

	const key = "images/busybox.tar"
	s.putBusybox(key, "hello from inventory\n")
	out, err := s.processImage(cmdTimeout, "--s3-key", key)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "images.flyio.local/busybox:latest"
	s.Ctr("containers", "create", "--snapshotter", "flyio", ref, "inv1")

	// images
	out = s.flyioOK("images", "--json")
	var imgs []admin.ImageInfo
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		t.Fatalf("images --json: %v\n%s", err, out)
	}
	if len(imgs) != 1 {
		t.Fatalf("images --json lists %d images, want 1:\n%s", len(imgs), out)
	}
	img := imgs[0]
	t.Logf("image: %+v", img)
	if img.ID != "busybox" || img.Ref != ref || img.Key != key || img.ETag == "" || !strings.HasPrefix(img.Digest, "sha256:") || !strings.HasPrefix(img.ChainID, "sha256:") {
		t.Errorf("image = %+v, want busybox from %s with etag, digest and chain id", img, key)
	}
	if img.Size <= 0 || img.CompressedSize <= 0 || img.DeviceID == 0 || img.Usage <= 0 {
		t.Errorf("image sizes/device = %d/%d bytes, device %d, usage %d; want all set", img.Size, img.CompressedSize, img.DeviceID, img.Usage)
	}
	if len(img.Dependants) != 1 || !strings.HasSuffix(img.Dependants[0], "/inv1") {
		t.Errorf("dependants = %v, want the container's snapshot .../inv1", img.Dependants)
	}
	table := s.flyioOK("images")
	t.Logf("images:\n%s", table)
	if !strings.Contains(table, "busybox") || !strings.Contains(table, "DEPENDANTS") || !strings.Contains(table, "iB") {
		t.Errorf("images table lacks the image or its sizes:\n%s", table)
	}

	// snapshots
	out = s.flyioOK("snapshots", "--json", "--all")
	var tree admin.SnapshotTree
	if err := json.Unmarshal([]byte(out), &tree); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, out)
	}
	var base *admin.SnapshotNode
	tree.Walk(func(n *admin.SnapshotNode, depth int) {
		if n.Name == img.ChainID && depth == 0 {
			base = n
		}
	})
	if base == nil {
		t.Fatalf("no root snapshot named %s in the tree:\n%s", img.ChainID, out)
	}
	if base.Kind != "Committed" || base.DeviceID != img.DeviceID || base.DeviceName != s.Cfg.Pool.Name+"-thin-"+strconv.FormatUint(uint64(img.DeviceID), 10) || base.Usage <= 0 || base.Size == 0 {
		t.Errorf("base = %+v, want committed on device %d with usage", base, img.DeviceID)
	}
	if tree.UsageSource != "pool metadata" {
		t.Errorf("usage source = %q (%s), want pool metadata", tree.UsageSource, tree.UsageError)
	}
	if len(base.Children) != 1 || base.Children[0].Name != "inv1" || base.Children[0].DeviceID == 0 || base.Children[0].Kind != "Active" {
		t.Fatalf("children of the base = %+v, want the active snapshot inv1 with a device", base.Children)
	}
	var roles []string
	for _, d := range tree.Devices {
		roles = append(roles, d.Role)
	}
	if !slices.Contains(roles, "template") {
		t.Errorf("snapshots --all devices %v lack the template", roles)
	}
	table = s.flyioOK("snapshots")
	t.Logf("snapshots:\n%s", table)
	if !strings.Contains(table, "\\_ ") || !strings.Contains(table, "inv1") || !strings.Contains(table, base.DeviceName) {
		t.Errorf("snapshots table is not a tree with the container under the base:\n%s", table)
	}

	// diag, gathered by the daemon
	bundle := filepath.Join(s.Dir, "diag-daemon.tar.gz")
	out = s.flyioOK("diag", "--output", bundle)
	t.Logf("diag:\n%s", out)
	files := readBundle(t, bundle)
	for _, name := range []string{"dm-version.txt", "pool.txt", "config.toml", "environment.txt", "daemon.log", "bolt-stats.json", "runs.json", "gc-dry-run.txt", "images.json", "snapshots.json", "kernel.txt", "version.txt", "mounts.txt"} {
		if _, ok := files[name]; !ok {
			t.Errorf("bundle lacks %s (error note: %q)", name, files[name+".error"])
		}
	}
	checkBundleSecrets(t, files, secrets)
	if !strings.Contains(files["dm-version.txt"], "device-mapper driver 4.") {
		t.Errorf("dm-version.txt = %q", files["dm-version.txt"])
	}
	// The committed base is not active; the container's snapshot is.
	if !strings.Contains(files["pool.txt"], "thin-pool") || !strings.Contains(files["pool.txt"], "status: ") || !strings.Contains(files["pool.txt"], base.Children[0].DeviceName+" (") {
		t.Errorf("pool.txt lacks the pool's table, status or the container's active device:\n%s", files["pool.txt"])
	}
	for _, v := range []string{"AWS_SECRET_ACCESS_KEY=<redacted>", "FLYIO_TEST_API_TOKEN=<redacted>"} {
		if !strings.Contains(files["environment.txt"], v) {
			t.Errorf("environment.txt lacks %q:\n%s", v, files["environment.txt"])
		}
	}
	if !strings.Contains(files["config.toml"], s.Cfg.Pool.Name) {
		t.Errorf("config.toml lacks the pool name:\n%s", files["config.toml"])
	}
	if !strings.Contains(files["daemon.log"], "serving snapshots API on") {
		t.Errorf("daemon.log lacks the start-up line:\n%s", tail(files["daemon.log"], 40))
	}
	var st metadata.DBStats
	if err := json.Unmarshal([]byte(files["bolt-stats.json"]), &st); err != nil {
		t.Fatalf("bolt-stats.json: %v", err)
	}
	keys := map[string]int{}
	for _, b := range st.Buckets {
		keys[b.Name] = b.Keys
	}
	if keys["images"] != 1 || keys["snapshots"] < 2 || st.FileSize == 0 {
		t.Errorf("bolt stats: %d bytes, bucket keys %v; want 1 image and >= 2 snapshots", st.FileSize, keys)
	}
	if !strings.Contains(out, "wrote "+bundle) || !strings.Contains(out, "bolt-stats.json") {
		t.Errorf("diag output does not name the bundle and its contents:\n%s", out)
	}

	// The recent log is served on its own too (the dashboard's activity).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	lines, err := s.admin().RecentLog(ctx, 3)
	cancel()
	if err != nil || len(lines) != 3 || !strings.Contains(strings.Join(lines, "\n"), "level=") {
		t.Errorf("RecentLog(3) = %q, %v; want 3 log lines", lines, err)
	}

	// diag with the daemon stopped: gathered by the command itself, with
	// the secret in its own environment.
	s.StopDaemon()
	bundle = filepath.Join(s.Dir, "diag-offline.tar.gz")
	out, err = harness.Run(cmdTimeout, s.Path, []string{"AWS_SECRET_ACCESS_KEY=" + s.gw.SecretKey}, s.Bin, "--config", s.CfgPath, "diag", "--output", bundle)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("diag (daemon stopped):\n%s", out)
	files = readBundle(t, bundle)
	for _, name := range []string{"dm-version.txt", "pool.txt", "bolt-stats.json", "runs.json", "config.toml", "environment.txt", "diag-command.txt", "images.json", "snapshots.json"} {
		if _, ok := files[name]; !ok {
			t.Errorf("offline bundle lacks %s (error note: %q)", name, files[name+".error"])
		}
	}
	if _, ok := files["daemon.log"]; !ok {
		if note := files["daemon.log.error"]; !strings.Contains(note, "journal") {
			t.Errorf("offline bundle has no daemon.log and no note saying why: %q", note)
		}
	}
	if !strings.Contains(files["images.json"], `"dependants": [`) || !strings.Contains(files["snapshots.json"], `"usage_source": "pool metadata"`) {
		t.Errorf("offline images.json or snapshots.json incomplete:\n%s\n%s", files["images.json"], files["snapshots.json"])
	}
	if !strings.Contains(files["diag-command.txt"], "did not answer") {
		t.Errorf("diag-command.txt = %q, want it to say the daemon did not answer", files["diag-command.txt"])
	}
	checkBundleSecrets(t, files, secrets)
}

// flyioOK runs our command and fails the test on error.
func (e *env) flyioOK(args ...string) string {
	e.T.Helper()
	out, err := e.flyio(args...)
	if err != nil {
		e.T.Fatal(err)
	}
	return out
}

// readBundle returns the files of a diag bundle by their name inside its
// top directory.
func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		_, name, _ := strings.Cut(h.Name, "/")
		files[name] = string(b)
		names = append(names, name)
	}
	t.Logf("%s holds %v", filepath.Base(path), names)
	return files
}

// checkBundleSecrets fails if any file holds one of the secret values.
func checkBundleSecrets(t *testing.T, files map[string]string, secrets []string) {
	t.Helper()
	for name, data := range files {
		for _, sec := range secrets {
			if strings.Contains(data, sec) {
				t.Errorf("bundle file %s holds the secret %q", name, sec)
			}
		}
	}
}
