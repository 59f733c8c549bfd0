package e2e

// Helpers of the tests that drive the snapshotter with the clients users
// really run (nerdctl, crictl): publishing the test images to the test
// registry and the S3 layer store, and checking that a container's root
// is one of our thin devices.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// published names what publishImages left in the registry and the layer
// store, with nothing of it left in containerd.
type published struct {
	app    string        // the test image (ociarchive.TestImage)
	pause  string        // the pause image, "" unless asked for
	layers []pushedLayer // the app's layers, in the layer store
}

// requireClientTools fails (never skips) when the real parts the client
// tests need are missing: the registry, versitygw where dm is real.
func requireClientTools(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(registryBin); err != nil {
		t.Fatalf("%v (apt-get install docker-registry, or run test/tools.sh)", err)
	}
	if os.Getenv("FLYIO_REQUIRE_DM") == "1" {
		t.Setenv(s3test.RequireEnv, "1")
	}
}

// toolBin is tools/name, failing the test when test/tools.sh did not
// install it.
func toolBin(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(toolsBin(t), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v (test/tools.sh installs %s; it is required)", err, name)
	}
	return p
}

// publishImages pushes the test image (and the pause image when
// withPause) to the registry at addr, uploads the app's layers to the
// layer store with push-layers, and makes containerd forget all of it, so
// that what a client pulls next comes from the registry and S3 only.
func publishImages(t *testing.T, s *s3env, addr string, withPause bool) published {
	t.Helper()
	const localApp, localPause = "docker.io/flyio/e2e:1", "docker.io/flyio/pause:1"
	p := published{app: addr + "/test/app:1"}
	s.importImage(localApp)
	s.Ctr("images", "tag", localApp, p.app)
	s.Ctr("images", "push", "--plain-http", p.app)
	rm := []string{localApp, p.app}
	if withPause {
		p.pause = addr + "/test/pause:1"
		img, err := ociarchive.PauseImage(localPause, ociarchive.BusyboxPath)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := ociarchive.Write(&b, img); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(s.Dir, "pause.tar")
		writeFile(t, path, b.String())
		s.Ctr("images", "import", "--snapshotter", "flyio", path)
		s.Ctr("images", "tag", localPause, p.pause)
		s.Ctr("images", "push", "--plain-http", p.pause)
		rm = append(rm, localPause, p.pause)
	}
	out, err := s.pushLayers(p.app)
	if err != nil {
		t.Fatal(err)
	}
	p.layers = parsePushLayers(t, out, "uploaded")
	s.Ctr(append([]string{"images", "rm", "--sync"}, rm...)...)
	if out := s.Ctr("snapshots", "--snapshotter", "flyio", "ls"); countLines(out) != 1 {
		t.Fatalf("snapshots left after removing the images:\n%s", out)
	}
	cl := s.Ctr("content", "ls")
	for _, l := range p.layers {
		if contentHas(cl, l.digest) {
			t.Fatalf("layer %s still in the content store after rm --sync:\n%s", l.digest, cl)
		}
	}
	return p
}

// checkLayerStoreFills checks that every layer of p reached containerd's
// namespace ns as a fill from S3: the daemon GET the blob, the content
// store never got it, and the daemon holds one remote fill per layer.
// byDigest says the Prepare carried CRI's cri.layer-digest label, so the
// daemon went to the blob directly and never read a diff-id pointer.
func checkLayerStoreFills(t *testing.T, s *s3env, ns string, p published, byDigest bool) {
	t.Helper()
	for _, l := range p.layers {
		if n := s.gets(l.key); n == 0 {
			t.Errorf("no GET of s3://%s/%s: layer %s was not filled from S3", s.gw.Bucket, l.key, l.digest)
		}
		ptr, err := pointerKey(s, l.diffID)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.gets(ptr); byDigest && n != 0 {
			t.Errorf("%d GETs of the pointer s3://%s/%s: the Prepare of layer %s did not carry containerd.io/snapshot/cri.layer-digest", n, s.gw.Bucket, ptr, l.digest)
		}
	}
	cl, err := s.CtrErr("--namespace", ns, "content", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range p.layers {
		if contentHas(cl, l.digest) {
			t.Errorf("layer %s reached the content store: it was downloaded, not filled from S3", l.digest)
		}
	}
	if remotes := remoteFills(t, s.Cfg.Address); len(remotes) != len(p.layers) {
		t.Errorf("daemon has %d remote/ snapshots, want one per layer (%d): %v", len(remotes), len(p.layers), remotes)
	}
	if log := s.DaemonLog(); strings.Contains(log, "from the remote store failed") {
		t.Errorf("the daemon logged failed remote fills:\n%s", tail(log, 40))
	}
}

// pointerKey is the layer store's key of the pointer for diff id d.
func pointerKey(s *s3env, d string) (string, error) {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return "", fmt.Errorf("diff id %q is not sha256:<64 hex>", d)
	}
	return s.Cfg.S3.LayerPrefix + "diffids/sha256/" + hex, nil
}

// rootScript prints the source and type of the mount at / (from
// /proc/mounts) on one line before the rest of a container's script.
const rootScript = `grep '^[^ ]* / ' /proc/mounts | head -n 1
`

var rootLine = regexp.MustCompile(`^/dev/mapper/(\S+) / (ext4|xfs) `)

// checkOurRootfs checks that the first line of out (rootScript's) names
// a thin device of our pool as the container's root, and returns the rest
// of out.
func checkOurRootfs(t *testing.T, pool, out string) string {
	t.Helper()
	first, rest, _ := strings.Cut(out, "\n")
	m := rootLine.FindStringSubmatch(first)
	if m == nil || !strings.HasPrefix(m[1], pool+"-thin-") {
		t.Errorf("container root is %q, want /dev/mapper/%s-thin-N (ext4 or xfs): not one of our snapshots", first, pool)
		return rest
	}
	// Only the container's own view can tell: after `run --rm` returns
	// its snapshot is removed and the reaper may already have taken the
	// device away (a stat of /dev/mapper here raced with it).
	t.Logf("container root (/proc/mounts): %s", first)
	return rest
}

// runStdout runs name with args and the env's PATH, returning stdout
// alone (clients print progress and warnings on stderr); the error
// carries both.
func (e *env) runStdout(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PATH="+e.Path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), err
}
