package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

const registryBin = "/usr/bin/docker-registry"

// TestRegistryPull pushes the test image to a local registry, removes it
// from containerd and pulls it back: the pull path (fetch, then the
// transfer service's unpack into flyio) rather than import.
func TestRegistryPull(t *testing.T) {
	dmtest.Require(t)
	if _, err := os.Stat(registryBin); err != nil {
		t.Fatalf("%v (apt-get install docker-registry, or run test/tools.sh)", err)
	}
	e := startEnv(t)
	addr := startRegistry(t, e)

	const local = "docker.io/flyio/e2e:1"
	remote := addr + "/test/img:1"
	e.importImage(local)
	e.Ctr("images", "tag", local, remote)
	e.Ctr("images", "push", "--plain-http", remote)
	// --sync waits for containerd's GC, so the content and the unpacked
	// snapshots are really gone before the pull.
	e.Ctr("images", "rm", "--sync", local, remote)
	if out := e.Ctr("snapshots", "--snapshotter", "flyio", "ls"); countLines(out) != 1 {
		t.Fatalf("snapshots left after removing the image:\n%s", out)
	}

	e.Ctr("images", "pull", "--plain-http", "--snapshotter", "flyio", remote)
	e.logTree()
	got := e.Ctr("run", "--rm", "--snapshotter", "flyio", remote, "pulled", "/bin/sh", "-c", ociarchive.CheckScript)
	if got != ociarchive.CheckWant {
		t.Errorf("container view of the pulled image:\n%s\nwant:\n%s", got, ociarchive.CheckWant)
	}
}

// startRegistry runs Debian's docker-registry on a free loopback port with
// storage in the env's directory and returns its host:port.
func startRegistry(t *testing.T, e *env) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startRegistryAt(t, e, addr)
	return addr
}

// startRegistryAt runs the registry on addr (host:port), for a test that
// must name it before the registry can start.
func startRegistryAt(t *testing.T, e *env, addr string) {
	t.Helper()
	cfg := filepath.Join(e.Dir, "registry.yml")
	writeFile(t, cfg, fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(e.Dir, "registry"), addr))
	p := e.Start("registry", exec.Command(registryBin, "serve", cfg))
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.Log)
			t.Logf("===== registry log =====\n%s", tail(string(b), 100))
		}
	})
	e.WaitFor("the registry", 60*time.Second, p, func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func countLines(s string) int {
	n := 0
	for _, l := range splitLines(s) {
		if l != "" {
			n++
		}
	}
	return n
}
