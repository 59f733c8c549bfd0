package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/harness"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// TestNerdctlRun drives the snapshotter with nerdctl (built by
// test/tools.sh from the source we ship; never skipped): a pull from the
// test registry over plain http whose layers the daemon fills from the S3
// layer store, a `run --rm` whose root is one of our thin devices,
// `images` and `rmi`, which leaves no snapshot behind. / is read-only in
// the VM, so nerdctl's state and CNI paths are moved as docs/containerd.md
// shows.
func TestNerdctlRun(t *testing.T) {
	dmtest.Require(t)
	requireClientTools(t)
	bin := toolBin(t, "nerdctl")
	cni, err := harness.CNIBin(toolsBin(t))
	if err != nil {
		t.Fatal(err)
	}
	s := startS3Env(t, withDaemonTOML(`layer_prefix = "layers/"`))
	p := publishImages(t, s, startRegistry(t, s.env), false)

	netconf := filepath.Join(s.Dir, "cni", "net.d")
	if err := os.MkdirAll(netconf, 0o755); err != nil {
		t.Fatal(err)
	}
	nerdctl := func(args ...string) string {
		t.Helper()
		global := []string{"--address", s.Sock, "--namespace", namespace, "--snapshotter", "flyio",
			"--data-root", filepath.Join(s.Dir, "nerdctl"), "--cgroup-manager", "cgroupfs",
			"--cni-path", cni, "--cni-netconfpath", netconf,
			"--hosts-dir", filepath.Join(s.Dir, "certs.d"), "--insecure-registry"}
		out, err := s.runStdout(bin, append(global, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Logf("nerdctl: %s", strings.TrimSpace(nerdctl("--version")))

	s.proxy.ResetLog()
	nerdctl("pull", p.app)
	// nerdctl passes no CRI labels to a snapshotter it does not know:
	// the daemon finds each layer through its diff-id pointer.
	checkLayerStoreFills(t, s, namespace, p, false)

	if imgs := splitLines(nerdctl("images", "--format", "{{.Repository}}:{{.Tag}}")); !slices.Contains(imgs, p.app) {
		t.Errorf("nerdctl images does not list %s: %q", p.app, imgs)
	}

	out := nerdctl("run", "--rm", "--net", "none", p.app, "/bin/sh", "-c", rootScript+ociarchive.CheckScript)
	if got := checkOurRootfs(t, s.Cfg.Pool.Name, out); got != ociarchive.CheckWant {
		t.Errorf("container view of the image nerdctl pulled:\n%s\nwant:\n%s", got, ociarchive.CheckWant)
	}
	if ls := s.Ctr("containers", "ls", "-q"); strings.TrimSpace(ls) != "" {
		t.Errorf("run --rm left containers: %s", ls)
	}

	// rmi deletes synchronously (containerd's gc runs before it returns):
	// the image's snapshots, ours, are gone with it.
	nerdctl("rmi", p.app)
	if imgs := strings.TrimSpace(nerdctl("images", "-q")); imgs != "" {
		t.Errorf("nerdctl images after rmi: %q", imgs)
	}
	if ls := s.Ctr("snapshots", "--snapshotter", "flyio", "ls"); countLines(ls) != 1 {
		t.Errorf("snapshots left after nerdctl rmi:\n%s", ls)
	}
}
