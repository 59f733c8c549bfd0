package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CRIConfig describes a private containerd whose CRI plugin is on, with
// our daemon as the snapshotter of every image and pod: what a Kubernetes
// node runs (docs/kubernetes.md shows the same tables).
type CRIConfig struct {
	Dir                string // root and state of containerd, CNI and CDI dirs
	Address            string // containerd's socket
	SnapshotterAddress string // our daemon's socket
	SnapshotterRoot    string // our root_dir: exported so kubelet's imagefs stats name it
	SandboxImage       string // the pinned pause image
	RegistryHostsDir   string // hosts.toml directory (config_path)
	CNIBinDir          string // CNI plugins
	// SnapshotAnnotations passes the CRI layer labels (among them
	// containerd.io/snapshot/cri.layer-digest) on Prepare; it also moves
	// CRI's pulls from the transfer service to the local client pull.
	SnapshotAnnotations bool
}

// TOML is the containerd 2.x (version 3) configuration. The CNI and CDI
// directories live under Dir: on a read-only /etc (the VM) the CRI
// plugin does not load with its defaults.
func (c CRIConfig) TOML() string {
	return containerdTOML(c.Dir, c.Address, c.SnapshotterAddress, "", fmt.Sprintf("  exports = { root = %q }\n", c.SnapshotterRoot)) +
		fmt.Sprintf(`[plugins.'io.containerd.cri.v1.images']
  snapshotter = "flyio"
  disable_snapshot_annotations = %t
  stats_collect_period = 1
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = %q
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = %q
[plugins.'io.containerd.cri.v1.runtime']
  cdi_spec_dirs = [%q]
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  snapshotter = "flyio"
[plugins.'io.containerd.cri.v1.runtime'.cni]
  conf_dir = %q
  bin_dirs = [%q]
`, !c.SnapshotAnnotations, c.SandboxImage, c.RegistryHostsDir, filepath.Join(c.Dir, "cdi"), filepath.Join(c.Dir, "cni", "net.d"), c.CNIBinDir)
}

// WritePlainHTTPHost makes hostsDir/<host>/hosts.toml send every pull of
// host (host:port) over plain http: how containerd's resolver (CRI's
// config_path, nerdctl's --hosts-dir) reaches a test registry.
func WritePlainHTTPHost(hostsDir, host string) error {
	if strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("registry host %q: want host:port", host)
	}
	dir := filepath.Join(hostsDir, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(fmt.Sprintf(`server = "http://%s"
[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, host, host)), 0o644)
}

// CNIBin is where test/tools.sh puts the CNI plugins: FLYIO_CNI_BIN, or
// cni/bin beside the tools directory. A missing plugin fails.
func CNIBin(tools string) (string, error) {
	d := os.Getenv("FLYIO_CNI_BIN")
	if d == "" {
		d = filepath.Join(filepath.Dir(tools), "cni", "bin")
	}
	for _, p := range []string{"bridge", "loopback", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join(d, p)); err != nil {
			return "", fmt.Errorf("CNI plugin: %w (run test/tools.sh, or set FLYIO_CNI_BIN)", err)
		}
	}
	return d, nil
}
