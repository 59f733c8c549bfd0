package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestNerdctlRun runs the image with nerdctl, the docker-like client most
// people would point at the snapshotter.
func TestNerdctlRun(t *testing.T) {
	dmtest.Require(t)
	nerdctl := filepath.Join(toolsBin(t), "nerdctl")
	if _, err := os.Stat(nerdctl); err != nil {
		t.Skipf("nerdctl is not installed in %s (test/tools.sh could not fetch it: the Go module proxy refuses github.com/containerd/nerdctl/v2 here)", filepath.Dir(nerdctl))
	}
	e := startEnv(t)
	const ref = "docker.io/flyio/e2e:1"
	e.importImage(ref)
	out, err := e.run(nerdctl, "--address", e.sock, "--namespace", namespace, "--snapshotter", "flyio",
		"--data-root", filepath.Join(e.dir, "nerdctl"), "--cgroup-manager", "cgroupfs",
		"run", "--rm", "--net", "none", ref, "/bin/echo", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "hello" {
		t.Errorf("nerdctl run printed %q, want hello", out)
	}
}
