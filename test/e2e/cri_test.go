package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/harness"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// criNamespace is the containerd namespace CRI keeps Kubernetes' images,
// pods and containers in.
const criNamespace = "k8s.io"

// TestCRIPodLifecycle drives the snapshotter the way kubelet does, with
// crictl against containerd's CRI plugin configured as docs/kubernetes.md
// says: snapshotter = "flyio" for images and for the runtime,
// disable_snapshot_annotations = false, a pinned sandbox image served by
// the test registry (no network), and the exported root for imagefs
// stats. It pulls an image whose layers the daemon fills from the S3
// layer store through CRI's cri.layer-digest label, checks imagefsinfo,
// runs a host-network pod with one container (create, start, exec, logs,
// stop, rm, stopp, rmp), and removes the images, which removes our
// snapshots.
func TestCRIPodLifecycle(t *testing.T) {
	dmtest.Require(t)
	requireClientTools(t)
	bin := toolBin(t, "crictl")
	cni, err := harness.CNIBin(toolsBin(t))
	if err != nil {
		t.Fatal(err)
	}
	// The registry's address is in containerd's config (the pinned
	// sandbox image, hosts.toml), so it is chosen before either starts.
	regAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s := startS3Env(t, withDaemonTOML(`layer_prefix = "layers/"`), withContainerdTOML(func(e *env) string {
		hosts := filepath.Join(e.Dir, "certs.d")
		if err := harness.WritePlainHTTPHost(hosts, regAddr); err != nil {
			t.Fatal(err)
		}
		return harness.CRIConfig{
			Dir: filepath.Join(e.Dir, "containerd"), Address: e.Sock,
			SnapshotterAddress: e.Cfg.Address, SnapshotterRoot: e.Cfg.RootDir,
			SandboxImage: regAddr + "/test/pause:1", RegistryHostsDir: hosts, CNIBinDir: cni,
			SnapshotAnnotations: true,
		}.TOML()
	}))
	// crictl wants a config file; this one also keeps a host's
	// /etc/crictl.yaml out of the test.
	crictlCfg := filepath.Join(s.Dir, "crictl.yaml")
	writeFile(t, crictlCfg, fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\n", s.Sock, s.Sock))
	crictl := func(args ...string) (string, error) {
		return s.runStdout(bin, append([]string{"--config", crictlCfg}, args...)...)
	}
	cri := func(args ...string) string {
		t.Helper()
		out, err := crictl(args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	// The CRI plugin serves after containerd's own API does.
	s.WaitFor("the CRI plugin", 90*time.Second, s.Ctrd, func() bool {
		_, err := crictl("version")
		return err == nil
	})
	// Runs before the env stops containerd and removes the pool: a
	// failed test must not leave a pod holding a thin device.
	t.Cleanup(func() {
		if out, err := crictl("rmp", "--force", "--all"); err != nil {
			t.Logf("cleanup: %v\n%s", err, out)
		}
	})
	startRegistryAt(t, s.env, regAddr)
	p := publishImages(t, s, regAddr, true)

	s.proxy.ResetLog()
	cri("pull", p.app)
	checkLayerStoreFills(t, s, criNamespace, p, true)
	if imgs := cri("images", "-o", "json"); !strings.Contains(imgs, `"`+p.app+`"`) {
		t.Errorf("crictl images does not list %s:\n%s", p.app, imgs)
	}
	checkImageFSInfo(t, crictl, s.Cfg.RootDir, func() uint64 {
		out, err := s.flyio("status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Pool admin.PoolStatus `json:"pool_status"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return st.Pool.UsedDataBlocks * st.Pool.DataBlockSize
	})

	// A host-network pod: the sandbox image comes from the test registry.
	podDir := filepath.Join(s.Dir, "pods")
	podCfg := filepath.Join(s.Dir, "pod.json")
	writeJSON(t, podCfg, map[string]any{
		"metadata":      map[string]any{"name": "flyio-pod", "namespace": "default", "uid": "flyio-pod-uid", "attempt": 0},
		"log_directory": podDir,
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	})
	ctrCfg := filepath.Join(s.Dir, "container.json")
	writeJSON(t, ctrCfg, map[string]any{
		"metadata": map[string]any{"name": "app", "attempt": 0},
		"image":    map[string]any{"image": p.app},
		"command":  []string{"/bin/sh", "-c", "echo started by cri; exec sleep 600"},
		"log_path": "app.log",
		"linux":    map[string]any{},
	})
	pod := cri("runp", podCfg)
	cid := cri("create", pod, ctrCfg, podCfg)
	cri("start", cid)
	waitLog(t, crictl, cid, "started by cri")

	out := cri("exec", cid, "/bin/sh", "-c", rootScript+ociarchive.CheckScript)
	if got := checkOurRootfs(t, s.Cfg.Pool.Name, out+"\n"); got != ociarchive.CheckWant {
		t.Errorf("container view of the image CRI pulled:\n%s\nwant:\n%s", got, ociarchive.CheckWant)
	}
	// The container's and the sandbox's snapshots are ours (the runtime's
	// snapshotter setting), active, under their ids.
	snaps := s.criCtr("snapshots", "--snapshotter", "flyio", "ls")
	for _, id := range []string{cid, pod} {
		if !hasActiveSnapshot(snaps, id) {
			t.Errorf("no active flyio snapshot %s:\n%s", id, snaps)
		}
	}

	cri("stop", "--timeout", "2", cid)
	waitExited(t, crictl, cid)
	cri("rm", cid)
	cri("stopp", pod)
	cri("rmp", pod)
	if snaps := s.criCtr("snapshots", "--snapshotter", "flyio", "ls"); strings.Contains(snaps, cid) || strings.Contains(snaps, pod) {
		t.Errorf("rm/rmp left the container's or the sandbox's snapshot:\n%s", snaps)
	}

	// What kubelet's image gc does: RemoveImage of each image. Its
	// snapshots are ours, and containerd's gc removes them.
	cri("rmi", p.app, p.pause)
	if imgs := cri("images", "-q"); imgs != "" {
		t.Errorf("crictl images after rmi: %q", imgs)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		snaps := s.criCtr("snapshots", "--snapshotter", "flyio", "ls")
		if countLines(snaps) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshots left 60s after crictl rmi:\n%s", snaps)
		}
		time.Sleep(time.Second)
	}
}

// withContainerdTOML replaces the env's containerd configuration.
func withContainerdTOML(f func(e *env) string) envOption {
	return func(o *envOptions) { o.containerdTOML = f }
}

// criCtr runs ctr in CRI's namespace.
func (e *env) criCtr(args ...string) string {
	e.T.Helper()
	out, err := e.CtrErr(append([]string{"--namespace", criNamespace}, args...)...)
	if err != nil {
		e.T.Fatal(err)
	}
	return out
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(b))
}

// hasActiveSnapshot reports whether `ctr snapshots ls` output lists key
// as an active snapshot (columns: KEY PARENT KIND).
func hasActiveSnapshot(ls, key string) bool {
	for _, l := range splitLines(ls) {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key && f[len(f)-1] == "Active" {
			return true
		}
	}
	return false
}

// waitLog polls `crictl logs` of container id until it prints want.
func waitLog(t *testing.T, crictl func(...string) (string, error), id, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := crictl("logs", id)
		if err == nil && strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("crictl logs %s did not print %q within 60s: %v\n%s", id, want, err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitExited polls `crictl inspect` of container id until CRI reports it
// exited. Under load StopContainer can return before containerd has
// processed the task's exit (its log says "Shim ttrpc connection closed
// when stopping container ..., retry"), and RemoveContainer then refuses
// a container it still thinks is running; kubelet retries, so the test
// waits as kubelet would.
func waitExited(t *testing.T, crictl func(...string) (string, error), id string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := crictl("inspect", "-o", "json", id)
		var st struct {
			Status struct {
				State string `json:"state"`
			} `json:"status"`
		}
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Status.State == "CONTAINER_EXITED" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not exited 60s after crictl stop (state %q): %v\n%s", id, st.Status.State, err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkImageFSInfo checks what kubelet's image gc reads: imagefsinfo's
// first image filesystem is the root our proxy plugin exports, with the
// usage of our snapshots (CRI sums Usage of every snapshot; it collects
// every stats_collect_period).
func checkImageFSInfo(t *testing.T, crictl func(...string) (string, error), root string, poolUsed func() uint64) {
	t.Helper()
	var info struct {
		Status struct {
			ImageFilesystems []struct {
				FsID struct {
					Mountpoint string `json:"mountpoint"`
				} `json:"fsId"`
				UsedBytes struct {
					Value json.RawMessage `json:"value"` // a string or a number
				} `json:"usedBytes"`
			} `json:"imageFilesystems"`
		} `json:"status"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := crictl("imagefsinfo", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("crictl imagefsinfo: %v\n%s", err, out)
		}
		fs := info.Status.ImageFilesystems
		if len(fs) == 0 {
			t.Fatalf("crictl imagefsinfo lists no image filesystem:\n%s", out)
		}
		if fs[0].FsID.Mountpoint != root {
			t.Fatalf("imagefsinfo mountpoint is %q, want the exported root %q:\n%s", fs[0].FsID.Mountpoint, root, out)
		}
		if used, _ := strconv.ParseUint(strings.Trim(string(fs[0].UsedBytes.Value), `"`), 10, 64); used > 0 {
			t.Logf("crictl imagefsinfo:\n%s", out)
			// Each snapshot counts only the blocks it does not share
			// with its parent or the template, so no block is counted
			// twice and the sum is at most what the pool holds (which
			// adds the template). Counting mapped blocks, every layer
			// counted the template again and the sum exceeded it. CRI
			// asks a committed snapshot's usage once and keeps it, so
			// the first figure is the one that must hold.
			if pool := poolUsed(); used > pool {
				t.Errorf("imagefsinfo reports %d bytes used, more than the pool's %d bytes of data: usage counts shared blocks", used, pool)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("imagefsinfo still reports 0 bytes used after 60s:\n%s", out)
		}
		time.Sleep(time.Second)
	}
}
